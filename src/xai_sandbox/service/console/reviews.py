"""Reviewers: the queue by due date, claim and release, the full report, decide with a
rationale."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Form
from fastapi.responses import HTMLResponse, Response

from xai_sandbox.errors import InvalidInputError
from xai_sandbox.reports.render import report_context
from xai_sandbox.service.console.pages import (
    PAGE_SIZE,
    QUEUE_PAGES,
    Csrf,
    P,
    PageNo,
    area_router,
    as_uuid,
    full_report,
    page_url,
    redirect,
)
from xai_sandbox.store.entries import rfc3339
from xai_sandbox.store.store import REVIEW_OUTCOMES

router = area_router()


@router.get("/reviews")
def review_queue(p: P, page: PageNo = 1) -> HTMLResponse:
    """Pending requests, the earliest due first."""
    p.require(*QUEUE_PAGES)
    rows = p.rt.store.review_queue(limit=PAGE_SIZE + 1, offset=(page - 1) * PAGE_SIZE)
    now = datetime.now(UTC)
    items = []
    for r in rows[:PAGE_SIZE]:
        due = r["due_at"]
        if due is not None and due.tzinfo is None:
            due = due.replace(tzinfo=UTC)
        items.append({"id": r["id"], "decision_id": r["decision_id"],
                      "kind": r["kind"] or "human_review", "channel": r["channel"],
                      "requested_at": rfc3339(r["requested_at"]), "due_at": rfc3339(due),
                      "overdue": due is not None and due < now,
                      "claimed_by": r["claimed_by"]})
    return p.render("reviews.html", items=items, page=page,
                    has_next=len(rows) > PAGE_SIZE, prev_url=page_url(p.request, page - 1),
                    next_url=page_url(p.request, page + 1))


@router.get("/reviews/{review_id}")
def review_page(review_id: str, p: P) -> HTMLResponse:
    """A request with the full report of its decision; claim, release and decide."""
    p.require(*QUEUE_PAGES)
    review = p.rt.store.review(as_uuid("review_id", review_id))
    report = full_report(p, review["decision_id"], "read", "review")
    steps = review["steps"]
    holder = steps[-1]["actor"] if steps and steps[-1]["action"] == "claimed" else None
    return p.render("review.html", review={**review, "requested_at": rfc3339(
        review["requested_at"]), "due_at": rfc3339(review["due_at"]),
        "decided_at": rfc3339(review["decided_at"]),
        "steps": [{**s, "at": rfc3339(s["at"])} for s in steps]},
        holder=holder, outcomes=REVIEW_OUTCOMES, can_decide=p.who.has("reviewer"),
        **report_context(report))


@router.post("/reviews/{review_id}/claim")
def claim(review_id: str, p: P, csrf: Csrf = None,
          release: Annotated[bool, Form()] = False) -> Response:
    p.check_csrf(csrf)
    p.require("reviewer")
    review_id = as_uuid("review_id", review_id)
    p.rt.decider.claim_review(review_id, reviewer=p.who.name, role="reviewer", release=release)
    return redirect(f"/console/reviews/{review_id}",
                     notice="review_released" if release else "review_claimed")


@router.post("/reviews/{review_id}/decision")
def decide(review_id: str, p: P, csrf: Csrf = None, outcome: Annotated[str, Form()] = "",
           rationale: Annotated[str, Form(max_length=4000)] = "") -> Response:
    """Confirm, override or reverse the decision, with a rationale."""
    p.check_csrf(csrf)
    p.require("reviewer")
    review_id = as_uuid("review_id", review_id)
    if not rationale.strip():
        raise InvalidInputError("rationale", "must explain the outcome (1 to 4000 "
                                             "characters)", rationale)
    p.rt.decider.decide_review(review_id, outcome=outcome, reviewer=p.who.name,
                               role="reviewer", rationale=rationale.strip())
    return redirect("/console/reviews", notice="review_decided")
