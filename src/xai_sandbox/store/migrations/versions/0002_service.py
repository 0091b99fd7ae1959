"""The service: principals and API keys, explanation jobs, review due dates and claims,
and how to reload each registered model.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("spec_json", sa.Text))
    with op.batch_alter_table("reviews") as batch:
        batch.add_column(sa.Column("kind", sa.String(20)))
        batch.add_column(sa.Column("channel", sa.String(20)))
        batch.add_column(sa.Column("due_at", TS))
    op.create_index("ix_reviews_due_at", "reviews", ["due_at"])
    op.create_table(
        "review_events",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("review_id", sa.String(36), sa.ForeignKey("reviews.id"), nullable=False),
        sa.Column("decision_id", sa.String(36), nullable=False),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("role", sa.String(64), nullable=False),
        sa.Column("at", TS, nullable=False))
    op.create_index("ix_review_events_review_id", "review_events", ["review_id"])
    op.create_table(
        "principals",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("roles", sa.String(200), nullable=False),
        sa.Column("subject_ref", sa.String(64)),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("disabled", sa.Boolean, nullable=False))
    op.create_index("ix_principals_subject_ref", "principals", ["subject_ref"])
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("principal_id", sa.String(36), sa.ForeignKey("principals.id"),
                  nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("label", sa.String(128), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("revoked_at", TS))
    op.create_index("ix_api_keys_principal_id", "api_keys", ["principal_id"])
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("decision_id", sa.String(36), sa.ForeignKey("decisions.id"),
                  nullable=False, unique=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("methods_json", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("token", sa.String(36)),
        sa.Column("lease_until", TS),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("finished_at", TS),
        sa.Column("report_id", sa.String(36)),
        sa.Column("error", sa.Text))
    op.create_index("ix_jobs_status", "jobs", ["status"])
    op.create_table(
        "adhoc_explanations",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("model_key", sa.String(260), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("method", sa.String(64), nullable=False),
        sa.Column("input_commitment", sa.String(64), nullable=False),
        sa.Column("explanation_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False))
    # The compliance officer's decision list pages by time.
    op.create_index("ix_decisions_decided_at", "decisions", ["decided_at"])


def downgrade() -> None:
    op.drop_index("ix_decisions_decided_at", "decisions")
    for name in ("adhoc_explanations", "jobs", "api_keys", "principals", "review_events"):
        op.drop_table(name)
    op.drop_index("ix_reviews_due_at", "reviews")
    with op.batch_alter_table("reviews") as batch:
        for col in ("due_at", "channel", "kind"):
            batch.drop_column(col)
    with op.batch_alter_table("models") as batch:
        batch.drop_column("spec_json")
