"""Reviews: a person is asked to look at a decision, within a number of working days,
claims the request and decides it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from xai_sandbox.store.entries import rfc3339
from xai_sandbox.workflows.context import Context

__all__ = ["add_working_days", "claim_review", "decide_review", "request_review"]


def add_working_days(start: datetime, days: int) -> datetime:
    """``start`` plus ``days`` working days (Monday to Friday)."""
    out = start
    left = days
    while left > 0:
        out += timedelta(days=1)
        if out.weekday() < 5:
            left -= 1
    return out


def request_review(ctx: Context, decision_id: str, *, requested_by: str, reason: str,
                   kind: str = "human_review", channel: str = "api") -> dict[str, Any]:
    """Open a human review (or a contest, or an explanation request) of a decision, due
    the SLA's number of working days from now."""
    due = add_working_days(datetime.now(UTC), ctx.sla_days)
    review_id, leaf = ctx.store.request_review(decision_id, requested_by, reason,
                                                kind=kind, channel=channel, due_at=due)
    return {"review_id": review_id, "status": "pending", "due_at": rfc3339(due),
            "leaf_index": leaf}


def claim_review(ctx: Context, review_id: str, *, reviewer: str, role: str,
                 release: bool = False) -> int:
    """Claim a pending review for ``reviewer`` (one holder at a time), or release it;
    returns the log leaf of the claim."""
    return ctx.store.claim_review(review_id, reviewer=reviewer, role=role, release=release)


def decide_review(ctx: Context, review_id: str, *, outcome: str, reviewer: str, role: str,
                  rationale: str) -> int:
    """Confirm, override or reverse the reviewed decision with a rationale; from then on
    the outcome that stands is the reviewer's (:func:`~.reading.final_outcome`). Returns
    the log leaf of the decision."""
    return ctx.store.decide_review(review_id, outcome=outcome, reviewer=reviewer, role=role,
                                   rationale=rationale)
