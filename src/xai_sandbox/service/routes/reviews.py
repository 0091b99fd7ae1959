"""Human reviews: the subject of a decision asks for one; reviewers and compliance
officers read the queue; reviewers claim, release and decide."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import HTTPException, Query

from xai_sandbox.service.deps import RT, Uuid, Who, allowed, own_decision, require
from xai_sandbox.service.schemas import (
    Receipt,
    Review,
    ReviewClaim,
    ReviewDecided,
    ReviewDecision,
    ReviewRequest,
    ReviewRequested,
)
from xai_sandbox.service.strict import resource_router
from xai_sandbox.store.entries import rfc3339

router = resource_router("reviews")


@router.post("/v1/decisions/{decision_id}/reviews", dependencies=[allowed("subject", "admin")],
             status_code=201,
             response_model=ReviewRequested)
def ask_review(decision_id: Uuid, body: ReviewRequest, rt: RT, who: Who
               ) -> dict[str, Any]:
    """The person decided about asks for a human review (or contests, or asks for more
    detail); the answer gives the due date under the service level."""
    row = own_decision(rt, who, decision_id)
    if not who.has("subject", "admin") or (who.has("subject") and
                                            row["subject_ref"] != who.subject_ref):
        raise HTTPException(403, "role: only the subject of the decision asks for its "
                                 "review")
    return rt.decider.request_review(decision_id, requested_by=who.name, reason=body.reason,
                                     kind=body.kind)


@router.get("/v1/reviews", response_model=list[Review], response_model_exclude_unset=True)
def review_queue(rt: RT, who: Who, limit: Annotated[int, Query(ge=1, le=200)] = 50,
                 offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0
                 ) -> list[dict[str, Any]]:
    """Pending requests, the earliest due first."""
    require(who, "reviewer", "compliance_officer")
    return [_review_out(r) for r in rt.store.review_queue(limit=limit, offset=offset)]


# Unset fields are left out: the subject reads fewer fields than staff do.
@router.get("/v1/reviews/{review_id}", response_model=Review, response_model_exclude_unset=True)
def review(review_id: Uuid, rt: RT, who: Who) -> dict[str, Any]:
    row = rt.store.review(review_id)
    if not who.has("reviewer", "compliance_officer", "auditor", "admin"):
        own_decision(rt, who, row["decision_id"])  # 404 unless it is theirs
        return {k: v for k, v in _review_out(row).items()
                if k in ("review_id", "decision_id", "kind", "status", "requested_at",
                         "due_at", "decided_at")}
    out = _review_out(row)
    out["steps"] = [{"action": s["action"], "actor": s["actor"], "role": s["role"],
                     "at": rfc3339(s["at"])} for s in row["steps"]]
    return out


@router.post("/v1/reviews/{review_id}/claim")
def claim_review(review_id: Uuid, rt: RT, who: Who) -> ReviewClaim:
    require(who, "reviewer")
    leaf = rt.decider.claim_review(review_id, reviewer=who.name, role="reviewer")
    return ReviewClaim(review_id=review_id, claimed_by=who.name, leaf_index=leaf)


@router.post("/v1/reviews/{review_id}/release")
def release_review(review_id: Uuid, rt: RT, who: Who) -> ReviewClaim:
    require(who, "reviewer")
    leaf = rt.decider.claim_review(review_id, reviewer=who.name, role="reviewer", release=True)
    return ReviewClaim(review_id=review_id, claimed_by=None, leaf_index=leaf)


@router.post("/v1/reviews/{review_id}/decision", dependencies=[allowed("reviewer")])
def decide_review(review_id: Uuid, body: ReviewDecision, rt: RT, who: Who
                  ) -> ReviewDecided:
    """Confirm, override or reverse the decision, with a rationale."""
    leaf = rt.decider.decide_review(review_id, outcome=body.outcome, reviewer=who.name,
                                    role="reviewer", rationale=body.rationale)
    return ReviewDecided(review_id=review_id, status=body.outcome, leaf_index=leaf,
                         receipt=Receipt.model_validate(rt.store.receipt(leaf).to_dict()))


def _review_out(r: dict[str, Any]) -> dict[str, Any]:
    return {"review_id": r["id"], "decision_id": r["decision_id"],
            "kind": r.get("kind") or "human_review", "status": r["status"],
            "reason": r["reason"], "requested_by": r["requested_by"],
            "requested_at": rfc3339(r["requested_at"]), "due_at": rfc3339(r.get("due_at")),
            "claimed_by": r.get("claimed_by"), "reviewer": r["reviewer"],
            "decided_at": rfc3339(r["decided_at"]), "rationale": r["rationale"]}
