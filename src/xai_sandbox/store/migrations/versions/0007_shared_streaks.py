"""Anchor-risk streaks that several job workers share: one row per model and anchor with
the run of consecutive risky decisions so far.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    op.create_table(
        "anchor_streaks",
        sa.Column("model_key", sa.String(260), primary_key=True),
        sa.Column("anchor", sa.String(64), primary_key=True),
        sa.Column("decisions_json", sa.Text, nullable=False))


def downgrade() -> None:
    op.drop_table("anchor_streaks")
