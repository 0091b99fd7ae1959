"""Reviews and alerts: human review, contest and explanation requests of a decision (GDPR
Art. 22(3), PIPL Art. 24), their claims and outcomes, and raised alerts; each logged in
the transaction that writes it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, update

import xai_sandbox.store.tables as t
from xai_sandbox.audit.canonical import canonical_json
from xai_sandbox.errors import ConflictError, InvalidInputError, NotFoundError
from xai_sandbox.store.core import StoreCore
from xai_sandbox.store.entries import ENTRY_BUILDERS
from xai_sandbox.store.facets import REVIEW_KINDS, REVIEW_OUTCOMES
from xai_sandbox.store.fields import check_text, utcnow

__all__ = ["ReviewRecords"]


class ReviewRecords(StoreCore):
    """The store's reviews and alerts."""

    def request_review(self, decision_id: str, requested_by: str, reason: str, *,
                       kind: str = "human_review", channel: str = "api",
                       due_at: datetime | None = None) -> tuple[str, int]:
        """A human review, contest or explanation request of a decision (GDPR Art. 22(3),
        PIPL Art. 24); returns (review id, leaf)."""
        with self.writer.begin() as conn:
            self._require_decision(conn, decision_id)
            found = self._insert_review(conn, decision_id, requested_by, reason, kind=kind,
                                        channel=channel, due_at=due_at)
        return found

    def _insert_review(self, conn: Connection, decision_id: str, requested_by: str,
                       reason: str, *, kind: str, channel: str, due_at: datetime | None,
                       exists_ok: bool = False) -> tuple[str, int]:
        """:meth:`request_review` inside the caller's transaction. A pending request of the
        same kind is a conflict, or (``exists_ok``) the answer: (its id, its leaf)."""
        if kind not in REVIEW_KINDS:
            raise InvalidInputError("kind", f"must be one of {list(REVIEW_KINDS)}", kind)
        row: dict[str, Any] = {"id": str(uuid.uuid4()), "decision_id": decision_id,
               "requested_by": check_text("requested_by", requested_by),
               "reason": check_text("reason", reason, 4000), "requested_at": utcnow(),
               "status": "pending", "reviewer": None, "reviewer_role": None,
               "rationale": None, "decided_at": None, "kind": kind,
               "channel": check_text("channel", channel, 20), "due_at": due_at}
        open_ = conn.execute(select(t.reviews.c.id).where(
            t.reviews.c.decision_id == decision_id, t.reviews.c.status == "pending",
            t.reviews.c.kind == kind)).first()
        if open_ is not None:
            if exists_ok:
                return str(open_.id), self.leaf_of(f"reviews:{open_.id}", conn)
            raise ConflictError("decision_id", f"already has a pending {kind} request",
                                decision_id)
        leaf = self._record(conn, t.reviews, row, "review_requested")
        conn.execute(update(t.decision_facets).where(
            t.decision_facets.c.decision_id == decision_id).values(review_status="pending"))
        return row["id"], leaf

    def review(self, review_id: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.reviews).where(t.reviews.c.id == review_id)
                               ).mappings().first()
            if row is None:
                raise NotFoundError("review_id", "must be a requested review", review_id)
            steps = conn.execute(select(t.review_events).where(
                t.review_events.c.review_id == review_id).order_by(t.review_events.c.at)
            ).mappings().all()
        return {**dict(row), "steps": [dict(s) for s in steps]}

    def reviews_of(self, decision_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.reviews).where(t.reviews.c.decision_id == decision_id)
                                .order_by(t.reviews.c.requested_at)).mappings().all()
        return [dict(r) for r in rows]

    def review_queue(self, *, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        """Pending requests, the earliest due first, with who holds each."""
        claims = (select(t.review_events.c.actor).where(
            t.review_events.c.review_id == t.reviews.c.id)
            .order_by(t.review_events.c.at.desc()).limit(1).scalar_subquery())
        last_action = (select(t.review_events.c.action).where(
            t.review_events.c.review_id == t.reviews.c.id)
            .order_by(t.review_events.c.at.desc()).limit(1).scalar_subquery())
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.reviews, claims.label("holder"), last_action.label("last_action"))
                .where(t.reviews.c.status == "pending")
                .order_by(t.reviews.c.due_at, t.reviews.c.requested_at)
                .limit(limit).offset(offset)).mappings().all()
        return [{**{k: v for k, v in r.items() if k not in ("holder", "last_action")},
                 "claimed_by": r["holder"] if r["last_action"] == "claimed" else None}
                for r in rows]

    def claim_review(self, review_id: str, *, reviewer: str, role: str,
                     release: bool = False) -> int:
        """Claim a pending request for ``reviewer`` (or release it); one holder at a time."""
        with self.writer.begin() as conn:
            row, holder = self._pending_review(conn, review_id)
            if release:
                if holder != reviewer:
                    raise ConflictError("review_id", "is not claimed by you", review_id)
            elif holder is not None and holder != reviewer:
                raise ConflictError("review_id", f"is claimed by {holder}", review_id)
            event = {"id": str(uuid.uuid4()), "review_id": review_id,
                     "decision_id": row["decision_id"],
                     "action": "released" if release else "claimed",
                     "actor": check_text("reviewer", reviewer),
                     "role": check_text("role", role, 64),
                     "at": utcnow()}
            return self._record(conn, t.review_events, event, "review_step")

    @staticmethod
    def _pending_review(conn: Connection, review_id: str
                        ) -> tuple[dict[str, Any], str | None]:
        """A pending review's row and who holds it (``None``: nobody), or the error."""
        row = conn.execute(select(t.reviews).where(t.reviews.c.id == review_id)
                           ).mappings().first()
        if row is None:
            raise NotFoundError("review_id", "must be a requested review", review_id)
        if row["status"] != "pending":
            raise ConflictError("review_id", "is already decided", review_id)
        last = conn.execute(select(t.review_events.c.action, t.review_events.c.actor).where(
            t.review_events.c.review_id == review_id)
            .order_by(t.review_events.c.at.desc()).limit(1)).first()
        holder = str(last.actor) if last is not None and last.action == "claimed" else None
        return dict(row), holder

    def decide_review(self, review_id: str, *, outcome: str, reviewer: str, role: str,
                      rationale: str) -> int:
        if outcome not in REVIEW_OUTCOMES:
            raise InvalidInputError("outcome", f"must be one of {list(REVIEW_OUTCOMES)}",
                                    outcome)
        with self.writer.begin() as conn:
            row, holder = self._pending_review(conn, review_id)
            if holder is not None and holder != reviewer:
                raise ConflictError("review_id", f"is claimed by {holder}", review_id)
            values = {"status": outcome, "reviewer": check_text("reviewer", reviewer),
                      "reviewer_role": check_text("role", role, 64),
                      "rationale": check_text("rationale", rationale, 4000), "decided_at": utcnow()}
            done = conn.execute(update(t.reviews).where(
                t.reviews.c.id == review_id, t.reviews.c.status == "pending").values(**values))
            if done.rowcount != 1:  # pragma: no cover - the write lock makes this a race loss
                raise ConflictError("review_id", "is already decided", review_id)
            conn.execute(update(t.decision_facets).where(
                t.decision_facets.c.decision_id == row["decision_id"]).values(
                review_status=outcome))
            entry = ENTRY_BUILDERS["review_decided"]({**row, **values})
            return self.log.append(conn, [(f"reviews:{review_id}", entry)])[0]

    def raise_alert(self, kind: str, body: Mapping[str, Any]) -> tuple[str, int]:
        row: dict[str, Any] = {"id": str(uuid.uuid4()), "kind": check_text("kind", kind, 64),
               "body_json": canonical_json(dict(body)).decode(), "raised_at": utcnow()}
        with self.writer.begin() as conn:
            return row["id"], self._record(conn, t.alerts, row, "alert_raised")

