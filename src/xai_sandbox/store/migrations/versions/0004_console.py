"""The web console: sign-in sessions, and the search facets of each decision (outcome,
anchor hits, reliability, review status) that the decisions list filters and pages on.

Revision ID: 0004
Revises: 0003
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "console_sessions",
        sa.Column("token_sha256", sa.String(64), primary_key=True),
        sa.Column("principal_id", sa.String(36), sa.ForeignKey("principals.id"),
                  nullable=False),
        sa.Column("key_id", sa.String(16), sa.ForeignKey("api_keys.id"), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("ended_at", TS))
    op.create_table(
        "decision_facets",
        sa.Column("decision_id", sa.String(36), sa.ForeignKey("decisions.id"),
                  primary_key=True),
        sa.Column("model_key", sa.String(260), nullable=False),
        sa.Column("decided_at", TS, nullable=False),
        sa.Column("outcome", sa.String(64), nullable=False),
        sa.Column("adverse", sa.Boolean, nullable=False),
        sa.Column("anchor_hits", sa.Integer),
        sa.Column("reliability", sa.String(20)),
        sa.Column("review_status", sa.String(20), nullable=False))
    for name, cols in FACET_INDEXES.items():
        op.create_index(name, "decision_facets", cols)
    backfill(op.get_bind())


# Each ends in (decided_at, decision_id), the list's order: a page is read off the index.
FACET_INDEXES = {
    "ix_facets_decided": ["decided_at", "decision_id"],
    "ix_facets_model": ["model_key", "decided_at", "decision_id"],
    "ix_facets_outcome": ["outcome", "decided_at", "decision_id"],
    "ix_facets_review": ["review_status", "decided_at", "decision_id"],
    "ix_facets_reliability": ["reliability", "decided_at", "decision_id"],
    "ix_facets_anchor": ["anchor_hits", "decided_at", "decision_id"],
}


def backfill(conn: sa.Connection) -> None:
    """Facets of the decisions stored before this revision."""
    meta = sa.MetaData()
    decisions = sa.Table("decisions", meta, autoload_with=conn)
    reports = sa.Table("reports", meta, autoload_with=conn)
    reviews = sa.Table("reviews", meta, autoload_with=conn)
    facets = sa.Table("decision_facets", meta, autoload_with=conn)
    latest: dict[str, tuple[object, bytes]] = {}
    for r in conn.execute(sa.select(reports.c.decision_id, reports.c.created_at,
                                    reports.c.body)):
        if r.decision_id not in latest or latest[r.decision_id][0] < r.created_at:
            latest[r.decision_id] = (r.created_at, bytes(r.body))
    status: dict[str, tuple[object, str]] = {}
    for r in conn.execute(sa.select(reviews.c.decision_id, reviews.c.requested_at,
                                    reviews.c.status)):
        if r.decision_id not in status or status[r.decision_id][0] < r.requested_at:
            status[r.decision_id] = (r.requested_at, r.status)
    rows = []
    for d in conn.execute(sa.select(decisions.c.id, decisions.c.model_key,
                                    decisions.c.decided_at, decisions.c.output_json)):
        output = json.loads(d.output_json)
        row = {"decision_id": d.id, "model_key": d.model_key, "decided_at": d.decided_at,
               "outcome": str(output.get("decision"))[:64],
               "adverse": bool(output.get("adverse")), "anchor_hits": None,
               "reliability": None,
               "review_status": status[d.id][1] if d.id in status else "none"}
        if d.id in latest:
            row.update(report_facets(json.loads(latest[d.id][1])))
        rows.append(row)
    for start in range(0, len(rows), 1000):
        conn.execute(sa.insert(facets), rows[start:start + 1000])


def report_facets(body: dict) -> dict:  # type: ignore[type-arg]
    """The facets a report sets (the store's own copy of this rule is in store.py)."""
    reliability = body.get("reliability") or {}
    level = ("withheld" if reliability.get("shown") is False
             else reliability.get("level") or "normal")
    return {"anchor_hits": len((body.get("anchors") or {}).get("hits") or []),
            "reliability": level}


def downgrade() -> None:
    op.drop_table("decision_facets")
    op.drop_table("console_sessions")
