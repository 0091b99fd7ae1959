"""Decisions: record one (operator); list them (staff roles; a subject sees only their
own); the subject view (the subject of the decision, any other id is 404, the same answer
as an unknown id; and staff roles)."""

from __future__ import annotations

import json
from typing import Annotated, Literal

from fastapi import HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse

import xai_sandbox.service.metrics as metrics
from xai_sandbox.errors import NotFoundError
from xai_sandbox.service.deps import (
    RT,
    STAFF,
    Uuid,
    Who,
    acting_role,
    allowed,
    base_url,
    limit_reads,
    request_locale,
    runtime_of,
)
from xai_sandbox.service.schemas import DecisionItem, DecisionRecorded, DecisionRequest, SubjectView
from xai_sandbox.service.strict import resource_router
from xai_sandbox.store.entries import rfc3339

router = resource_router("decisions")


@router.post("/v1/decisions", dependencies=[allowed("operator")],
             status_code=201, response_model=DecisionRecorded,
             responses={202: {"model": DecisionRecorded,
                              "description": "recorded; the explanation runs as a job"}})
def record_decision(body: DecisionRequest, request: Request, rt: RT, who: Who
                    ) -> JSONResponse:
    """Validate, score and record a decision; explain it by the model's policy.

    201 with the report link when the explanation is done; 202 with a job link when the
    policy's methods run as a job. The receipt proves the decision is in the audit log.
    """
    # At most a few decisions compute at once: more threads would only take turns at
    # the interpreter lock, and one holding the database's write lock would wait its turn.
    with rt.compute_slots:
        out = rt.decider.decide(model_id=body.model_id, version=body.version,
                                subject_id=body.subject_id, features=body.features,
                                case_ref=body.case_ref)
    metrics.DECISIONS.labels(out.model_key, str(out.output["decision"])).inc()
    base = base_url(request)
    if out.report_id is not None:
        status, explanation = 201, {"status": "ready",
                                    "report_url": f"{base}/v1/decisions/{out.decision_id}/report"}
    elif out.job_id is not None:
        status, explanation = 202, {"status": "queued", "job_id": out.job_id,
                                    "job_url": f"{base}/v1/jobs/{out.job_id}"}
        rt.pool.wake()
    else:
        status, explanation = 201, {"status": "not_required"}
    receipt = rt.store.receipt(out.leaf_index)
    return JSONResponse(status_code=status, content={
        "decision_id": out.decision_id, "case_ref": out.case_ref, "model": out.model_key,
        "output": out.output, "explanation": explanation,
        "subject_view_url": f"{base}/v1/decisions/{out.decision_id}",
        "receipt": receipt.to_dict()})


@router.get("/v1/decisions")
def list_decisions(rt: RT, who: Who, model: Annotated[str | None, Query(max_length=260)] = None,
                   limit: Annotated[int, Query(ge=1, le=200)] = 50,
                   offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0
                   ) -> list[DecisionItem]:
    """Decisions, newest first: a subject's own, or (staff) all, optionally of one model."""
    if who.has(*STAFF):
        rows = rt.store.decisions_of(model_key=model, limit=limit, offset=offset)
    elif who.subject_ref is not None:
        rows = rt.store.decisions_of(who.subject_ref, model_key=model, limit=limit,
                                     offset=offset)
    else:  # pragma: no cover - every principal has a role
        raise HTTPException(403, "role: no role can list decisions")
    return [DecisionItem(decision_id=r["id"], case_ref=r["case_ref"], model=r["model_key"],
                         decided_at=rfc3339(r["decided_at"]),
                         decision=json.loads(r["output_json"])["decision"]) for r in rows]


@router.get("/v1/decisions/{decision_id}", response_model=SubjectView)
async def subject_view(decision_id: Uuid, request: Request, who: Who,
                       lang: Annotated[Literal["en", "zh"] | None, Query(
                           description="en or zh; default: Accept-Language")] = None
                       ) -> Response:
    """The decision as the person decided about reads it: the outcome, at most four
    reasons with impact levels (no raw numbers), what they could change, their rights,
    and the status of any review they asked for.

    The hot path of the service: a few indexed reads run on the event loop, and the
    access event joins the next group commit without holding a thread.
    """
    rt = runtime_of(request)
    if not who.has(*STAFF) and who.subject_ref is None:  # pragma: no cover - no such key
        raise NotFoundError("decision_id", "must be a recorded decision", decision_id)
    locale = request_locale(request, lang)
    base = base_url(request)
    view = rt.decider.subject_view(
        decision_id, locale, f"{base}/v1/decisions/{decision_id}/reviews",
        subject_ref=None if who.has(*STAFF) else who.subject_ref)
    limit_reads(rt, who)
    await rt.access.record_async(record_type="decisions", record_id=decision_id,
                                 action="read", actor=who.name,
                                 role=acting_role(who, ("subject", *STAFF)),
                                 purpose="subject view")
    return Response(json.dumps(view, ensure_ascii=False).encode(),
                    media_type="application/json")
