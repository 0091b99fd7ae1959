"""Erasure and retention: a subject's personal payloads erased on request, legal holds,
and the purge of decisions past their retention; every deletion logged, so the log still
verifies.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import delete, select, update

import xai_sandbox.store.tables as t
from xai_sandbox.store.core import StoreCore
from xai_sandbox.store.fields import check_text, utcnow

__all__ = ["RetentionRecords"]


class RetentionRecords(StoreCore):
    """The store's erasures, legal holds and purges."""

    def erase_subject(self, subject_id: str, reason: str = "GDPR Art. 17 request") -> list[int]:
        """Delete the personal payloads (input and salt) of a subject's decisions.

        The decisions keep their commitments and the log still verifies; the input can no
        longer be recovered or confirmed. Returns the leaf indexes of the erasure entries.
        """
        ref = self.subject_ref(subject_id)
        out = []
        with self.writer.begin() as conn:
            ids = conn.execute(select(t.decisions.c.id).join(
                t.payloads, t.payloads.c.decision_id == t.decisions.c.id)
                .where(t.decisions.c.subject_ref == ref)).scalars().all()
            for decision_id in ids:
                conn.execute(delete(t.payloads).where(t.payloads.c.decision_id == decision_id))
                row = {"id": str(uuid.uuid4()), "decision_id": decision_id,
                       "reason": check_text("reason", reason, 200), "erased_at": utcnow()}
                out.append(self._record(conn, t.erasures, row, "payload_erased"))
        return out

    def set_legal_hold(self, decision_id: str, hold: bool) -> None:
        """A legal hold keeps a decision past its retain-until date until released."""
        with self.writer.begin() as conn:
            self._require_decision(conn, decision_id)
            conn.execute(update(t.decisions).where(t.decisions.c.id == decision_id)
                         .values(legal_hold=bool(hold)))

    def purge(self, now: datetime | None = None) -> list[str]:
        """Delete decisions past retain-until (not on legal hold) with their payloads,
        reports and reviews; each deletion is logged, so the log still verifies."""
        cutoff = now or utcnow()
        purged = []
        with self.writer.begin() as conn:
            due = conn.execute(select(t.decisions.c.id).where(
                t.decisions.c.retain_until < cutoff, t.decisions.c.legal_hold.is_(False))
            ).scalars().all()
            for decision_id in due:
                children = [("reports", r) for r in conn.execute(
                    select(t.reports.c.id).where(t.reports.c.decision_id == decision_id)
                ).scalars()] + [("reviews", r) for r in conn.execute(
                    select(t.reviews.c.id).where(t.reviews.c.decision_id == decision_id)
                ).scalars()] + [("review_events", r) for r in conn.execute(
                    select(t.review_events.c.id).where(
                        t.review_events.c.decision_id == decision_id)).scalars()]
                conn.execute(delete(t.payloads).where(t.payloads.c.decision_id == decision_id))
                conn.execute(delete(t.jobs).where(t.jobs.c.decision_id == decision_id))
                conn.execute(delete(t.review_events).where(
                    t.review_events.c.decision_id == decision_id))
                conn.execute(delete(t.reports).where(t.reports.c.decision_id == decision_id))
                conn.execute(delete(t.reviews).where(t.reviews.c.decision_id == decision_id))
                conn.execute(delete(t.decision_facets).where(
                    t.decision_facets.c.decision_id == decision_id))
                conn.execute(delete(t.decisions).where(t.decisions.c.id == decision_id))
                for record_type, record_id in [*children, ("decisions", decision_id)]:
                    row = {"id": str(uuid.uuid4()), "record_type": record_type,
                           "record_id": record_id, "purged_at": cutoff}
                    self._record(conn, t.purges, row, "record_purged")
                purged.append(decision_id)
        return purged

