"""The stored records (SQLAlchemy Core tables); Alembic migrations create them.

Personal data lives only in ``payloads`` (deletable); every other table holds
pseudonymous references and commitments. ``log_entries`` and ``log_nodes`` are the Merkle
log: leaf bodies with their hashes, and complete-subtree hashes.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

__all__ = ["metadata", "node_key", "node_position"]

metadata = MetaData()

log_head = Table(
    "log_head", metadata,
    Column("id", Integer, primary_key=True),
    Column("size", BigInteger, nullable=False),
)

log_entries = Table(
    "log_entries", metadata,
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("kind", String(40), nullable=False),
    Column("record_id", String(80), nullable=False, index=True),
    Column("body", LargeBinary, nullable=False),
    Column("leaf_hash", LargeBinary(32), nullable=False),
    Column("appended_at", DateTime(timezone=True), nullable=False),
)

# One integer key per node, (level << 56) | index: a proof's nodes are one IN query on
# the primary key.
log_nodes = Table(
    "log_nodes", metadata,
    Column("node", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary(32), nullable=False),
)

NODE_LEVEL_SHIFT = 56


def node_key(level: int, idx: int) -> int:
    return (level << NODE_LEVEL_SHIFT) | idx


def node_position(key: int) -> tuple[int, int]:
    return key >> NODE_LEVEL_SHIFT, key & ((1 << NODE_LEVEL_SHIFT) - 1)

checkpoints = Table(
    "checkpoints", metadata,
    Column("size", BigInteger, primary_key=True, autoincrement=False),
    Column("root", LargeBinary(32), nullable=False),
    Column("note", Text, nullable=False),
    Column("key_id", String(8), nullable=False),
    Column("signed_at", DateTime(timezone=True), nullable=False),
)

models = Table(
    "models", metadata,
    Column("key", String(260), primary_key=True),
    Column("model_id", String(128), nullable=False),
    Column("version", String(128), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("schema_json", Text),
    Column("registered_at", DateTime(timezone=True), nullable=False),
    # How to load it again (a built-in name or a model text) and its explanation policy.
    Column("spec_json", Text),
)

decisions = Table(
    "decisions", metadata,
    Column("id", String(36), primary_key=True),
    Column("case_ref", String(128), nullable=False),
    Column("subject_ref", String(64), nullable=False, index=True),
    Column("model_key", String(260), ForeignKey("models.key"), nullable=False),
    Column("input_commitment", String(64), nullable=False),
    Column("output_json", Text, nullable=False),
    Column("policy_version", String(64), nullable=False),
    Column("decided_at", DateTime(timezone=True), nullable=False, index=True),
    Column("retain_until", DateTime(timezone=True), nullable=False),
    Column("legal_hold", Boolean, nullable=False, default=False),
)

payloads = Table(
    "payloads", metadata,
    Column("decision_id", String(36), ForeignKey("decisions.id"), primary_key=True),
    Column("salt", LargeBinary(32), nullable=False),
    Column("payload_json", Text, nullable=False),
)

reports = Table(
    "reports", metadata,
    Column("id", String(36), primary_key=True),
    Column("decision_id", String(36), ForeignKey("decisions.id"), nullable=False, index=True),
    Column("schema_version", String(64), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

reviews = Table(
    "reviews", metadata,
    Column("id", String(36), primary_key=True),
    Column("decision_id", String(36), ForeignKey("decisions.id"), nullable=False, index=True),
    Column("requested_by", String(128), nullable=False),
    Column("reason", Text, nullable=False),
    Column("requested_at", DateTime(timezone=True), nullable=False),
    Column("status", String(20), nullable=False),
    Column("reviewer", String(128)),
    Column("reviewer_role", String(64)),
    Column("rationale", Text),
    Column("decided_at", DateTime(timezone=True)),
    # Added in 0002: human_review, contest or explanation; the channel; the due date.
    Column("kind", String(20)),
    Column("channel", String(20)),
    Column("due_at", DateTime(timezone=True), index=True),
)

# Append-only steps of a review between request and decision (claims, releases).
review_events = Table(
    "review_events", metadata,
    Column("id", String(36), primary_key=True),
    Column("review_id", String(36), ForeignKey("reviews.id"), nullable=False, index=True),
    Column("decision_id", String(36), nullable=False),
    Column("action", String(20), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("role", String(64), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
)

principals = Table(
    "principals", metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("roles", String(200), nullable=False),
    Column("subject_ref", String(64), index=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("disabled", Boolean, nullable=False, default=False),
)

# Bearer keys "xai_<key id>_<secret>": the secret is kept only as its SHA-256.
api_keys = Table(
    "api_keys", metadata,
    Column("id", String(16), primary_key=True),
    Column("principal_id", String(36), ForeignKey("principals.id"), nullable=False,
           index=True),
    Column("secret_sha256", String(64), nullable=False),
    Column("label", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
)

# Explanation jobs worked by the service's in-process pool. A job is claimed with a fresh
# token and a lease; only the holder of the token can complete it, so it completes once.
jobs = Table(
    "jobs", metadata,
    Column("id", String(36), primary_key=True),
    Column("decision_id", String(36), ForeignKey("decisions.id"), nullable=False,
           unique=True),
    Column("status", String(20), nullable=False, index=True),
    Column("methods_json", Text, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("token", String(36)),
    Column("lease_until", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("report_id", String(36)),
    Column("error", Text),
)

access_events = Table(
    "access_events", metadata,
    Column("id", String(36), primary_key=True),
    Column("record_type", String(40), nullable=False),
    Column("record_id", String(80), nullable=False, index=True),
    Column("action", String(20), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("role", String(64), nullable=False),
    Column("purpose", String(200), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
)

alerts = Table(
    "alerts", metadata,
    Column("id", String(36), primary_key=True),
    Column("kind", String(64), nullable=False),
    Column("body_json", Text, nullable=False),
    Column("raised_at", DateTime(timezone=True), nullable=False),
    # Added in 0003.
    Column("dedup_key", String(200), index=True),
    Column("acknowledged_at", DateTime(timezone=True)),
    Column("acknowledged_by", String(128)),
)

# The webhook outbox: one row per alert and receiver, written with the alert, retried with
# backoff until delivered, so an alert raised while a receiver is down reaches it later,
# across restarts.
alert_deliveries = Table(
    "alert_deliveries", metadata,
    Column("id", String(36), primary_key=True),
    Column("alert_id", String(36), ForeignKey("alerts.id"), nullable=False),
    Column("url", Text, nullable=False),
    Column("shape", String(20), nullable=False),
    Column("status", String(20), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("last_error", Text),
    Column("delivered_at", DateTime(timezone=True)),
    Index("ix_alert_deliveries_due", "status", "next_attempt_at"),
)

erasures = Table(
    "erasures", metadata,
    Column("id", String(36), primary_key=True),
    Column("decision_id", String(36), nullable=False, index=True),
    Column("reason", String(200), nullable=False),
    Column("erased_at", DateTime(timezone=True), nullable=False),
)

purges = Table(
    "purges", metadata,
    Column("id", String(36), primary_key=True),
    Column("record_type", String(40), nullable=False),
    Column("record_id", String(80), nullable=False, index=True),
    Column("purged_at", DateTime(timezone=True), nullable=False),
)

# Ad hoc explanations (POST /v1/explain): the log commits to the input and the result;
# neither is kept here, the caller holds them.
adhoc_explanations = Table(
    "adhoc_explanations", metadata,
    Column("id", String(36), primary_key=True),
    Column("model_key", String(260), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("method", String(64), nullable=False),
    Column("input_commitment", String(64), nullable=False),
    Column("explanation_sha256", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# Anchor thresholds chosen from reviewed decisions (xai-sandbox monitor calibrate).
calibrations = Table(
    "calibrations", metadata,
    Column("id", String(36), primary_key=True),
    Column("model_key", String(260), nullable=False, index=True),
    Column("body_json", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# The latest result of each monitoring check (drift per model), for /metrics and reports.
monitor_state = Table(
    "monitor_state", metadata,
    Column("key", String(300), primary_key=True),
    Column("body_json", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Web console sign-ins: the cookie holds a random token, the table its SHA-256, the key it
# was made from (revoking the key ends the session) and the CSRF token of its forms.
console_sessions = Table(
    "console_sessions", metadata,
    Column("token_sha256", String(64), primary_key=True),
    Column("principal_id", String(36), ForeignKey("principals.id"), nullable=False),
    Column("key_id", String(16), ForeignKey("api_keys.id"), nullable=False),
    Column("csrf", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True)),
)

# What the decisions list filters on, one row per decision, kept in the transactions that
# write the decision, its report and its reviews (derived: not in the audit log).
decision_facets = Table(
    "decision_facets", metadata,
    Column("decision_id", String(36), ForeignKey("decisions.id"), primary_key=True),
    Column("model_key", String(260), nullable=False),
    Column("decided_at", DateTime(timezone=True), nullable=False),
    Column("outcome", String(64), nullable=False),
    Column("adverse", Boolean, nullable=False),
    Column("anchor_hits", Integer),          # None: not explained yet
    Column("reliability", String(20)),      # normal, low, withheld; None: not explained
    Column("review_status", String(20), nullable=False),  # none, pending, or the outcome
    # Each ends in the list's order (decided_at, decision_id): a page is read off one.
    Index("ix_facets_decided", "decided_at", "decision_id"),
    Index("ix_facets_model", "model_key", "decided_at", "decision_id"),
    Index("ix_facets_outcome", "outcome", "decided_at", "decision_id"),
    Index("ix_facets_review", "review_status", "decided_at", "decision_id"),
    Index("ix_facets_reliability", "reliability", "decided_at", "decision_id"),
    Index("ix_facets_anchor", "anchor_hits", "decided_at", "decision_id"),
)
