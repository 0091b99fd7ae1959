"""Alerts: acknowledgement, de-duplication key, the webhook outbox; anchor calibrations.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.add_column(sa.Column("dedup_key", sa.String(200)))
        batch.add_column(sa.Column("acknowledged_at", TS))
        batch.add_column(sa.Column("acknowledged_by", sa.String(128)))
    op.create_index("ix_alerts_dedup_key", "alerts", ["dedup_key"])
    op.create_table(
        "alert_deliveries",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("alert_id", sa.String(36), sa.ForeignKey("alerts.id"), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("shape", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", TS, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("delivered_at", TS))
    op.create_index("ix_alert_deliveries_due", "alert_deliveries", ["status",
                                                                     "next_attempt_at"])
    op.create_table(
        "calibrations",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("model_key", sa.String(260), nullable=False),
        sa.Column("body_json", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False))
    op.create_index("ix_calibrations_model_key", "calibrations", ["model_key"])
    op.create_table(
        "monitor_state",
        sa.Column("key", sa.String(300), primary_key=True),
        sa.Column("body_json", sa.Text, nullable=False),
        sa.Column("updated_at", TS, nullable=False))


def downgrade() -> None:
    op.drop_table("monitor_state")
    op.drop_table("calibrations")
    op.drop_table("alert_deliveries")
    op.drop_index("ix_alerts_dedup_key", "alerts")
    with op.batch_alter_table("alerts") as batch:
        for col in ("acknowledged_by", "acknowledged_at", "dedup_key"):
            batch.drop_column(col)
