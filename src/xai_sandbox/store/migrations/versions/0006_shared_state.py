"""State that several API processes share: the rate-limit buckets of explanation reads and
the console's verification runs (with their progress).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    op.create_table(
        "rate_buckets",
        sa.Column("key_sha256", sa.String(64), primary_key=True),
        sa.Column("tokens", sa.Float, nullable=False),
        sa.Column("updated", sa.Float, nullable=False))
    op.create_index("ix_rate_buckets_updated", "rate_buckets", ["updated"])
    op.create_table(
        "verification_runs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(20), nullable=False, index=True),
        sa.Column("done", sa.Integer, nullable=False),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("result_json", sa.Text))


def downgrade() -> None:
    op.drop_table("verification_runs")
    op.drop_index("ix_rate_buckets_updated", "rate_buckets")
    op.drop_table("rate_buckets")
