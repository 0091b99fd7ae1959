"""Explanation reports: stored as canonical JSON with their log entry, setting their
decision's facets, and opening the human review a report that may not be shown requires.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, update

import xai_sandbox.store.tables as t
from xai_sandbox.audit.canonical import canonical_json
from xai_sandbox.errors import NotFoundError
from xai_sandbox.store.facets import report_facets
from xai_sandbox.store.fields import check_text, utcnow
from xai_sandbox.store.reviews import ReviewRecords

__all__ = ["ReportRecords"]


class ReportRecords(ReviewRecords):
    """The store's reports (a report can open a review, so these are reviews too)."""

    def record_report(self, decision_id: str, report: Mapping[str, Any],
                      schema_version: str) -> tuple[str, int]:
        """Store an explanation report as canonical JSON; returns (report id, leaf)."""
        with self.writer.begin() as conn:
            return self.insert_report(conn, decision_id, report, schema_version)

    def insert_report(self, conn: Connection, decision_id: str, report: Mapping[str, Any],
                      schema_version: str) -> tuple[str, int]:
        """:meth:`record_report` inside the caller's write transaction."""
        body = canonical_json(dict(report))
        row: dict[str, Any] = {"id": str(uuid.uuid4()), "decision_id": decision_id,
               "schema_version": check_text("schema_version", schema_version, 64), "body": body,
               "sha256": hashlib.sha256(body).hexdigest(), "created_at": utcnow()}
        self._require_decision(conn, decision_id)
        leaf = self._record(conn, t.reports, row, "explanation_generated")
        conn.execute(update(t.decision_facets).where(
            t.decision_facets.c.decision_id == decision_id).values(**report_facets(report)))
        required = report.get("review_required")
        if required:
            # A report that may not be shown opens its human review in the same transaction.
            self._insert_review(conn, decision_id, required["requested_by"],
                                required["reason"], kind=required["kind"],
                                channel=required["channel"],
                                due_at=datetime.fromisoformat(required["due_at"]),
                                exists_ok=True)
        return row["id"], leaf

    def latest_report(self, decision_id: str) -> dict[str, Any] | None:
        """The newest report of a decision: its row (body parsed) or ``None``."""
        with self.engine.connect() as conn:
            row = conn.execute(select(t.reports).where(t.reports.c.decision_id == decision_id)
                               .order_by(t.reports.c.created_at.desc()).limit(1)
                               ).mappings().first()
        if row is None:
            return None
        return {**dict(row), "body": json.loads(bytes(row["body"]))}

    def recent_reports(self, model_key: str, n: int) -> list[tuple[str, dict[str, Any]]]:
        """The ``n`` newest reports of a model, oldest first: (decision id, body)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.reports.c.decision_id, t.reports.c.body).join(
                t.decisions, t.decisions.c.id == t.reports.c.decision_id).where(
                t.decisions.c.model_key == model_key)
                .order_by(t.reports.c.created_at.desc()).limit(n)).all()
        return [(r.decision_id, dict(json.loads(bytes(r.body)))) for r in reversed(rows)]

    def report_body(self, report_id: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            body = conn.execute(select(t.reports.c.body).where(t.reports.c.id == report_id)
                                ).scalar()
        if body is None:
            raise NotFoundError("report_id", "must be a stored report", report_id)
        return dict(json.loads(bytes(body)))

