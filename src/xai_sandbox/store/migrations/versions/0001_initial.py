"""Initial schema: models, decisions, payloads, reports, reviews, access events, alerts,
erasures, purges, and the Merkle log (entries, nodes, head, checkpoints).

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table("log_head", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("size", sa.BigInteger, nullable=False))
    op.execute("INSERT INTO log_head (id, size) VALUES (1, 0)")
    op.create_table(
        "log_entries",
        sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("record_id", sa.String(80), nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("appended_at", TS, nullable=False))
    op.create_index("ix_log_entries_record_id", "log_entries", ["record_id"])
    op.create_table(
        "log_nodes",
        sa.Column("node", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False))
    op.create_table(
        "checkpoints",
        sa.Column("size", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("root", sa.LargeBinary(32), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("key_id", sa.String(8), nullable=False),
        sa.Column("signed_at", TS, nullable=False))
    op.create_table(
        "models",
        sa.Column("key", sa.String(260), primary_key=True),
        sa.Column("model_id", sa.String(128), nullable=False),
        sa.Column("version", sa.String(128), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("schema_json", sa.Text),
        sa.Column("registered_at", TS, nullable=False))
    op.create_table(
        "decisions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("case_ref", sa.String(128), nullable=False),
        sa.Column("subject_ref", sa.String(64), nullable=False),
        sa.Column("model_key", sa.String(260), sa.ForeignKey("models.key"), nullable=False),
        sa.Column("input_commitment", sa.String(64), nullable=False),
        sa.Column("output_json", sa.Text, nullable=False),
        sa.Column("policy_version", sa.String(64), nullable=False),
        sa.Column("decided_at", TS, nullable=False),
        sa.Column("retain_until", TS, nullable=False),
        sa.Column("legal_hold", sa.Boolean, nullable=False))
    op.create_index("ix_decisions_subject_ref", "decisions", ["subject_ref"])
    op.create_table(
        "payloads",
        sa.Column("decision_id", sa.String(36), sa.ForeignKey("decisions.id"),
                  primary_key=True),
        sa.Column("salt", sa.LargeBinary(32), nullable=False),
        sa.Column("payload_json", sa.Text, nullable=False))
    op.create_table(
        "reports",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("decision_id", sa.String(36), sa.ForeignKey("decisions.id"),
                  nullable=False),
        sa.Column("schema_version", sa.String(64), nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False))
    op.create_index("ix_reports_decision_id", "reports", ["decision_id"])
    op.create_table(
        "reviews",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("decision_id", sa.String(36), sa.ForeignKey("decisions.id"),
                  nullable=False),
        sa.Column("requested_by", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("requested_at", TS, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("reviewer", sa.String(128)),
        sa.Column("reviewer_role", sa.String(64)),
        sa.Column("rationale", sa.Text),
        sa.Column("decided_at", TS))
    op.create_index("ix_reviews_decision_id", "reviews", ["decision_id"])
    op.create_table(
        "access_events",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("record_type", sa.String(40), nullable=False),
        sa.Column("record_id", sa.String(80), nullable=False),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("role", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(200), nullable=False),
        sa.Column("at", TS, nullable=False))
    op.create_index("ix_access_events_record_id", "access_events", ["record_id"])
    op.create_table(
        "alerts",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("body_json", sa.Text, nullable=False),
        sa.Column("raised_at", TS, nullable=False))
    op.create_table(
        "erasures",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("decision_id", sa.String(36), nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("erased_at", TS, nullable=False))
    op.create_index("ix_erasures_decision_id", "erasures", ["decision_id"])
    op.create_table(
        "purges",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("record_type", sa.String(40), nullable=False),
        sa.Column("record_id", sa.String(80), nullable=False),
        sa.Column("purged_at", TS, nullable=False))
    op.create_index("ix_purges_record_id", "purges", ["record_id"])


def downgrade() -> None:
    for table in ("purges", "erasures", "alerts", "access_events", "reviews", "reports",
                  "payloads", "decisions", "models", "checkpoints", "log_nodes",
                  "log_entries", "log_head"):
        op.drop_table(table)
