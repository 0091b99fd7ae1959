"""The stored records (SQLAlchemy Core tables); Alembic migrations create them.

Personal data lives only in ``payloads`` (deletable); every other table holds
pseudonymous references and commitments. ``log_entries`` and ``log_nodes`` are the Merkle
log: leaf bodies with their hashes, and complete-subtree hashes.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
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


def _uuid_key() -> Column[str]:
    """A row's id: a UUID in its 36-character text form."""
    return Column("id", String(36), primary_key=True)


def _when(name: str) -> Column[datetime]:
    """A required UTC time."""
    return Column(name, DateTime(timezone=True), nullable=False)

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
    _when("appended_at"),
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
    _when("signed_at"),
)

models = Table(
    "models", metadata,
    Column("key", String(260), primary_key=True),
    Column("model_id", String(128), nullable=False),
    Column("version", String(128), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("schema_json", Text),
    _when("registered_at"),
    # How to load it again (a built-in name or a model text) and its explanation policy.
    Column("spec_json", Text),
)

decisions = Table(
    "decisions", metadata,
    _uuid_key(),
    Column("case_ref", String(128), nullable=False),
    Column("subject_ref", String(64), nullable=False, index=True),
    Column("model_key", String(260), ForeignKey("models.key"), nullable=False),
    Column("input_commitment", String(64), nullable=False),
    Column("output_json", Text, nullable=False),
    Column("policy_version", String(64), nullable=False),
    Column("decided_at", DateTime(timezone=True), nullable=False, index=True),
    _when("retain_until"),
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
    _uuid_key(),
    Column("decision_id", String(36), ForeignKey("decisions.id"), nullable=False, index=True),
    Column("schema_version", String(64), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("sha256", String(64), nullable=False),
    _when("created_at"),
)

reviews = Table(
    "reviews", metadata,
    _uuid_key(),
    Column("decision_id", String(36), ForeignKey("decisions.id"), nullable=False, index=True),
    Column("requested_by", String(128), nullable=False),
    Column("reason", Text, nullable=False),
    _when("requested_at"),
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
    _uuid_key(),
    Column("review_id", String(36), ForeignKey("reviews.id"), nullable=False, index=True),
    Column("decision_id", String(36), nullable=False),
    Column("action", String(20), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("role", String(64), nullable=False),
    _when("at"),
)

principals = Table(
    "principals", metadata,
    _uuid_key(),
    Column("name", String(128), nullable=False, unique=True),
    Column("roles", String(200), nullable=False),
    Column("subject_ref", String(64), index=True),
    _when("created_at"),
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
    _when("created_at"),
    Column("revoked_at", DateTime(timezone=True)),
)

# Explanation jobs worked by the service's in-process pool. A job is claimed with a fresh
# token and a lease; only the holder of the token can complete it, so it completes once.
jobs = Table(
    "jobs", metadata,
    _uuid_key(),
    Column("decision_id", String(36), ForeignKey("decisions.id"), nullable=False,
           unique=True),
    Column("status", String(20), nullable=False, index=True),
    Column("methods_json", Text, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("token", String(36)),
    Column("lease_until", DateTime(timezone=True)),
    _when("created_at"),
    Column("finished_at", DateTime(timezone=True)),
    Column("report_id", String(36)),
    Column("error", Text),
)

access_events = Table(
    "access_events", metadata,
    _uuid_key(),
    Column("record_type", String(40), nullable=False),
    Column("record_id", String(80), nullable=False, index=True),
    Column("action", String(20), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("role", String(64), nullable=False),
    Column("purpose", String(200), nullable=False),
    _when("at"),
)

alerts = Table(
    "alerts", metadata,
    _uuid_key(),
    Column("kind", String(64), nullable=False),
    Column("body_json", Text, nullable=False),
    _when("raised_at"),
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
    _uuid_key(),
    Column("alert_id", String(36), ForeignKey("alerts.id"), nullable=False),
    Column("url", Text, nullable=False),
    Column("shape", String(20), nullable=False),
    Column("status", String(20), nullable=False),
    Column("attempts", Integer, nullable=False),
    _when("next_attempt_at"),
    Column("last_error", Text),
    Column("delivered_at", DateTime(timezone=True)),
    Index("ix_alert_deliveries_due", "status", "next_attempt_at"),
)

erasures = Table(
    "erasures", metadata,
    _uuid_key(),
    Column("decision_id", String(36), nullable=False, index=True),
    Column("reason", String(200), nullable=False),
    _when("erased_at"),
)

purges = Table(
    "purges", metadata,
    _uuid_key(),
    Column("record_type", String(40), nullable=False),
    Column("record_id", String(80), nullable=False, index=True),
    _when("purged_at"),
)

# Ad hoc explanations (POST /v1/explain): the log commits to the input and the result;
# neither is kept here, the caller holds them.
adhoc_explanations = Table(
    "adhoc_explanations", metadata,
    _uuid_key(),
    Column("model_key", String(260), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("method", String(64), nullable=False),
    Column("input_commitment", String(64), nullable=False),
    Column("explanation_sha256", String(64), nullable=False),
    _when("created_at"),
)

# Anchor thresholds chosen from reviewed decisions (xai-sandbox monitor calibrate).
calibrations = Table(
    "calibrations", metadata,
    _uuid_key(),
    Column("model_key", String(260), nullable=False, index=True),
    Column("body_json", Text, nullable=False),
    _when("created_at"),
)

# The latest result of each monitoring check (drift per model), for /metrics and reports.
monitor_state = Table(
    "monitor_state", metadata,
    Column("key", String(300), primary_key=True),
    Column("body_json", Text, nullable=False),
    _when("updated_at"),
)

# Web console sign-ins: the cookie holds a random token, the table its SHA-256, the key it
# was made from (revoking the key ends the session) and the CSRF token of its forms.
console_sessions = Table(
    "console_sessions", metadata,
    Column("token_sha256", String(64), primary_key=True),
    Column("principal_id", String(36), ForeignKey("principals.id"), nullable=False),
    Column("key_id", String(16), ForeignKey("api_keys.id"), nullable=False),
    Column("csrf", String(64), nullable=False),
    _when("created_at"),
    _when("expires_at"),
    Column("ended_at", DateTime(timezone=True)),
)

# What the decisions list filters on, one row per decision, kept in the transactions that
# write the decision, its report and its reviews (derived: not in the audit log).
decision_facets = Table(
    "decision_facets", metadata,
    Column("decision_id", String(36), ForeignKey("decisions.id"), primary_key=True),
    Column("model_key", String(260), nullable=False),
    _when("decided_at"),
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

# Token buckets of explanation reads shared by every API process (the key is a SHA-256 of
# the scope and the subject or key id, never the id in clear); times are epoch seconds.
rate_buckets = Table(
    "rate_buckets", metadata,
    Column("key_sha256", String(64), primary_key=True),
    Column("tokens", Float, nullable=False),
    Column("updated", Float, nullable=False),
    Index("ix_rate_buckets_updated", "updated"),
)

# The console's full verifications of the log, visible to every API process; a run whose
# heartbeat stopped (its process died) is no longer counted as running.
verification_runs = Table(
    "verification_runs", metadata,
    _uuid_key(),
    Column("actor", String(128), nullable=False),
    _when("started_at"),
    _when("heartbeat_at"),
    Column("status", String(20), nullable=False, index=True),
    Column("done", Integer, nullable=False),
    Column("total", Integer, nullable=False),
    Column("result_json", Text),
)

# The run of consecutive risky decisions per model and anchor (derived: an alert is raised
# when a run reaches XAI_SANDBOX_ALERT_STREAK), shared by every process that explains.
anchor_streaks = Table(
    "anchor_streaks", metadata,
    Column("model_key", String(260), primary_key=True),
    Column("anchor", String(64), primary_key=True),
    Column("decisions_json", Text, nullable=False),
)
