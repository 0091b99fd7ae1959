"""The routes under ``/v1``, plus ``/health`` and ``/metrics``.

Who may call what:

- models: register (operator, admin); list (every staff role);
- ``POST /v1/decisions`` (operator); ``POST /v1/explain`` (operator, admin);
- decision list: staff roles; a subject sees only their own;
- subject view and review request: the subject of the decision (any other id is 404, the
  same answer as an unknown id), and staff roles for the view;
- full report (JSON, HTML, PDF): reviewer, compliance_officer, auditor, admin;
- review queue: reviewer, compliance_officer; claim and decide: reviewer;
- audit: the latest checkpoint is public (it holds no personal data; publishing it is
  what lets others hold the log to it); proofs and entries: auditor, compliance_officer,
  admin;
- ``/metrics``: operator, auditor, admin. ``/health`` is public.
"""

from __future__ import annotations

import base64
import json
import unicodedata
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from xai_sandbox.errors import InvalidInputError, NotFoundError
from xai_sandbox.models.schema import LOCALES
from xai_sandbox.monitor.alerts import acknowledge, list_alerts
from xai_sandbox.reports.render import render_html, render_json, render_pdf
from xai_sandbox.service import metrics
from xai_sandbox.service.app import Runtime, StrictJSONRoute
from xai_sandbox.service.schemas import (
    ERROR_RESPONSES,
    DecisionRequest,
    ExplainRequest,
    ModelRequest,
    ReviewDecision,
    ReviewRequest,
    TextExplainRequest,
)
from xai_sandbox.store.accounts import Principal
from xai_sandbox.store.entries import rfc3339

# Bodies are parsed strictly: NaN, infinities and unstorable text are 422 naming the field.
router = APIRouter(responses=ERROR_RESPONSES, route_class=StrictJSONRoute)
PUBLIC: dict[str, Any] = {"security": []}  # openapi_extra of the routes that need no key

STAFF = ("operator", "reviewer", "compliance_officer", "auditor", "admin")
REPORT_READERS = ("reviewer", "compliance_officer", "auditor", "admin")
AUDIT_READERS = ("auditor", "compliance_officer", "admin")
# Decision, review, job and alert ids are UUIDs.
Uuid = Annotated[str, Path(min_length=36, max_length=36,
                           pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-"
                                   r"[0-9a-f]{12}$")]


async def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.rt
    return rt


RT = Annotated[Runtime, Depends(runtime)]


async def principal(request: Request) -> Principal:
    """The principal of the request's bearer key (the OpenAPI document declares the
    scheme once for every route; see ``app.openapi_security``).

    async: one indexed lookup (or a cache hit), run on the event loop rather than
    hopping to a thread."""
    rt: Runtime = request.app.state.rt
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(401, "authorization: a bearer API key is required",
                            headers={"WWW-Authenticate": "Bearer"})
    found = rt.accounts.authenticate(token.strip())
    if found is None:
        raise HTTPException(401, "authorization: the API key is unknown or revoked",
                            headers={"WWW-Authenticate": "Bearer"})
    request.state.principal = found
    return found


Who = Annotated[Principal, Depends(principal)]


def _require(who: Principal, *roles: str) -> None:
    if not who.has(*roles):
        raise HTTPException(403, f"role: this needs one of {list(roles)}; you have "
                                 f"{sorted(who.roles)}")


def _role(who: Principal, preferred: tuple[str, ...]) -> str:
    """The role a principal acts in, for the access log."""
    for role in preferred:
        if role in who.roles:
            return role
    return sorted(who.roles)[0]


def _own_decision(rt: Runtime, who: Principal, decision_id: str) -> dict[str, Any]:
    """The decision, if ``who`` may see it; a subject gets 404 for anyone else's."""
    row = rt.store.decision(decision_id)
    if who.has(*STAFF):
        return row
    if who.subject_ref is None or row["subject_ref"] != who.subject_ref:
        raise NotFoundError("decision_id", "must be a recorded decision", decision_id)
    return row


def _limit(rt: Runtime, who: Principal) -> None:
    """Explanation reads: per subject and per key."""
    checks = [("key", who.key_id, rt.key_limit)]
    if who.subject_ref is not None:
        checks.append(("subject", who.subject_ref, rt.subject_limit))
    for scope, key, limiter in checks:
        wait = limiter.take(key)
        if wait:
            metrics.RATE_LIMITED.labels(scope).inc()
            raise HTTPException(429, f"rate limit: too many explanation reads for this "
                                     f"{scope}; retry in {int(wait)} s",
                                headers={"Retry-After": str(int(wait))})


def _locale(request: Request, lang: str | None) -> str:
    if lang is not None:
        if lang not in LOCALES:
            raise InvalidInputError("lang", f"must be one of {list(LOCALES)}", lang)
        return lang
    header = request.headers.get("accept-language", "")
    for part in header.split(","):
        tag = part.split(";")[0].strip().lower()
        if tag[:2] in LOCALES:
            return tag[:2]
    return "en"


# ---------------------------------------------------------------------- operations
@router.get("/health", tags=["operations"], openapi_extra=PUBLIC)
def health(rt: RT) -> dict[str, Any]:
    """Liveness and readiness: the database answers."""
    return {"status": "ok", "log_size": rt.store.log.size(),
            "models": len(rt.decider.models())}


@router.get("/metrics", tags=["operations"],
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}},
                             "description": "Prometheus text format"}})
def prometheus(rt: RT, who: Who) -> Response:
    """Prometheus metrics (text exposition format)."""
    _require(who, "operator", "auditor", "admin")
    for status, n in rt.decider.jobs.counts().items():
        metrics.JOBS_WAITING.labels(status).set(n)
    metrics.LOG_SIZE.set(rt.store.log.size())
    from sqlalchemy import func, select

    from xai_sandbox.monitor.drift import load_state, success_rates
    from xai_sandbox.store import tables as t

    with rt.store.engine.connect() as conn:
        open_alerts = conn.execute(select(t.alerts.c.kind, func.count()).where(
            t.alerts.c.acknowledged_at.is_(None)).group_by(t.alerts.c.kind)).all()
        pending = conn.execute(select(func.count()).select_from(t.alert_deliveries).where(
            t.alert_deliveries.c.status == "pending")).scalar_one()
    metrics.OPEN_ALERTS.clear()
    for kind, n in open_alerts:
        metrics.OPEN_ALERTS.labels(kind).set(n)
    metrics.PENDING_DELIVERIES.set(pending)
    rates = success_rates(rt.store, hours=2)
    if rates:
        metrics.SUCCESS_RATE.set(rates[-1]["success_rate"])
    for (model, anchor), (seen, hits) in list(rt.decider.anchor_counts.items()):
        metrics.ANCHOR_ALIGNED.labels(model, anchor).set(seen)
        metrics.ANCHOR_HITS.labels(model, anchor).set(hits)
    for gauge in (metrics.DRIFT_PSI, metrics.DRIFT_CHANGE, metrics.DRIFTED):
        gauge.clear()
    for report in load_state(rt.store, "drift:").values():
        for f in report["features"]:
            metrics.DRIFT_PSI.labels(report["model"], f["feature"]).set(f["psi"])
            metrics.DRIFT_CHANGE.labels(report["model"], f["feature"]).set(f["change"])
            metrics.DRIFTED.labels(report["model"], f["feature"]).set(float(f["drifted"]))
    return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)


# ---------------------------------------------------------------------- models
@router.post("/v1/models", tags=["models"], status_code=201)
def register_model(body: ModelRequest, rt: RT, who: Who) -> dict[str, Any]:
    """Register a model: a built-in one, or an XGBoost model in its JSON format (a data
    format: no code is loaded), with its feature schema, explanation policy and card."""
    _require(who, "operator", "admin")
    spec = body.model_dump(by_alias=True, exclude_none=True)
    served = rt.decider.register(spec)
    return served.summary()


@router.get("/v1/models", tags=["models"])
def list_models(rt: RT, who: Who) -> list[dict[str, Any]]:
    _require(who, *STAFF)
    return [m.summary() for m in rt.decider.models()]


# ---------------------------------------------------------------------- decisions
@router.post("/v1/decisions", tags=["decisions"], status_code=201,
             responses={202: {"description": "recorded; the explanation runs as a job"}})
def record_decision(body: DecisionRequest, request: Request, rt: RT, who: Who
                    ) -> JSONResponse:
    """Validate, score and record a decision; explain it by the model's policy.

    201 with the report link when the explanation is done; 202 with a job link when the
    policy's methods run as a job. The receipt proves the decision is in the audit log.
    """
    _require(who, "operator")
    # At most a few decisions compute at once: more threads would only take turns at
    # the interpreter lock, and one holding the database's write lock would wait its turn.
    with rt.compute_slots:
        out = rt.decider.decide(model_id=body.model_id, version=body.version,
                                subject_id=body.subject_id, features=body.features,
                                case_ref=body.case_ref)
    metrics.DECISIONS.labels(out.model_key, str(out.output["decision"])).inc()
    base = str(request.base_url).rstrip("/")
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


@router.get("/v1/decisions", tags=["decisions"])
def list_decisions(rt: RT, who: Who, model: Annotated[str | None, Query(max_length=260)] = None,
                   limit: Annotated[int, Query(ge=1, le=200)] = 50,
                   offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0
                   ) -> list[dict[str, Any]]:
    """Decisions, newest first: a subject's own, or (staff) all, optionally of one model."""
    if who.has(*STAFF):
        rows = rt.store.decisions_of(model_key=model, limit=limit, offset=offset)
    elif who.subject_ref is not None:
        rows = rt.store.decisions_of(who.subject_ref, model_key=model, limit=limit,
                                     offset=offset)
    else:  # pragma: no cover - every principal has a role
        raise HTTPException(403, "role: no role can list decisions")
    return [{"decision_id": r["id"], "case_ref": r["case_ref"], "model": r["model_key"],
             "decided_at": rfc3339(r["decided_at"]),
             "decision": json.loads(r["output_json"])["decision"]} for r in rows]


@router.get("/v1/decisions/{decision_id}", tags=["decisions"])
async def subject_view(decision_id: Uuid, request: Request, who: Who,
                       lang: Annotated[str | None, Query(description="en or zh; default: "
                                                                     "Accept-Language")] = None
                       ) -> Response:
    """The decision as the person decided about reads it: the outcome, at most four
    reasons with impact levels (no raw numbers), what they could change, their rights,
    and the status of any review they asked for.

    The hot path of the service: a few indexed reads run on the event loop, and the
    access event joins the next group commit without holding a thread.
    """
    rt: Runtime = request.app.state.rt
    if not who.has(*STAFF) and who.subject_ref is None:  # pragma: no cover - no such key
        raise NotFoundError("decision_id", "must be a recorded decision", decision_id)
    locale = _locale(request, lang)
    base = str(request.base_url).rstrip("/")
    view = rt.decider.subject_view(
        decision_id, locale, f"{base}/v1/decisions/{decision_id}/reviews",
        subject_ref=None if who.has(*STAFF) else who.subject_ref)
    _limit(rt, who)
    await rt.access.record_async(record_type="decisions", record_id=decision_id,
                                 action="read", actor=who.name,
                                 role=_role(who, ("subject", *STAFF)), purpose="subject view")
    return Response(json.dumps(view, ensure_ascii=False).encode(),
                    media_type="application/json")


@router.get("/v1/decisions/{decision_id}/report", tags=["reports"],
            responses={200: {"content": {"application/json": {}}, "description": "the report"}})
def report_json(decision_id: Uuid, rt: RT, who: Who,
                purpose: Annotated[str, Query(min_length=1, max_length=200)] = "review"
                ) -> Response:
    """The full report (every field of COMPLIANCE.md) as canonical JSON."""
    report = _report(rt, who, decision_id, "read", purpose)
    return Response(render_json(report), media_type="application/json")


@router.get("/v1/decisions/{decision_id}/report.html", tags=["reports"],
            responses={200: {"content": {"text/html": {}}, "description": "the report"}})
def report_html(decision_id: Uuid, rt: RT, who: Who,
                purpose: Annotated[str, Query(min_length=1, max_length=200)] = "review"
                ) -> HTMLResponse:
    """The full report as one self-contained HTML page."""
    return HTMLResponse(render_html(_report(rt, who, decision_id, "read", purpose)))


@router.get("/v1/decisions/{decision_id}/report.pdf", tags=["reports"],
            responses={200: {"content": {"application/pdf": {}}, "description": "the report"}})
def report_pdf(decision_id: Uuid, rt: RT, who: Who,
               purpose: Annotated[str, Query(min_length=1, max_length=200)] = "export"
               ) -> Response:
    """The full report as PDF (an export: logged as such)."""
    report = _report(rt, who, decision_id, "export", purpose)
    return Response(render_pdf(report), media_type="application/pdf", headers={
        "Content-Disposition": f'attachment; filename="report-{decision_id}.pdf"'})


def _report(rt: Runtime, who: Principal, decision_id: str, action: str, purpose: str
            ) -> dict[str, Any]:
    _require(who, *REPORT_READERS)
    # The purpose is printed in the report's access log (PDF included): text a person
    # reads, so no control, format, private-use or unassigned characters.
    odd = sorted({f"U+{ord(c):04X}" for c in purpose
                  if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn")})
    if odd:
        raise InvalidInputError("purpose", "must be printable text (no control, format, "
                                "private-use or unassigned characters)", odd)
    rt.store.decision(decision_id)
    _limit(rt, who)
    # The access is logged before the report is assembled, so the report lists it.
    rt.access.record(record_type="decisions", record_id=decision_id, action=action,
                     actor=who.name, role=_role(who, REPORT_READERS), purpose=purpose)
    return rt.decider.full_report(decision_id)


# ---------------------------------------------------------------------- ad hoc
@router.post("/v1/explain", tags=["decisions"])
def explain_adhoc(body: ExplainRequest, rt: RT, who: Who) -> dict[str, Any]:
    """Explain an input that is not a decision, with the provenance chain (input, layer
    activations, gradient weighting, anchor match, regulatory rule, hash) and a receipt
    for the log entry that commits to input and result."""
    _require(who, "operator", "admin")
    _limit(rt, who)
    served = rt.decider.model(body.model_id, body.version)
    features = body.input
    if isinstance(features, list):
        import numpy as np

        x = served.model.adapter.validate_inputs(np.asarray([features], dtype=np.float64),
                                                 "input")
        features = served.schema.decode(x)[0]
    with rt.compute_slots:
        result = rt.decider.explain_adhoc(model_id=body.model_id, version=body.version,
                                          features=features, method=body.method,
                                          target=body.target, params=body.params,
                                          actor=who.name)
    metrics.EXPLANATIONS.labels(body.method, "ok").inc()
    return result


@router.post("/v1/explain/text", tags=["decisions"])
def explain_text(body: TextExplainRequest, rt: RT, who: Who) -> dict[str, Any]:
    """Explain a text with a built-in text model: token and word attributions (integrated
    gradients on the word embeddings, with its completeness error), phrase anchors with
    their regulations, alerts after a streak of risky texts, and a receipt for the log
    entry that commits to the text and the result."""
    _require(who, "operator", "admin")
    _limit(rt, who)
    with rt.compute_slots:
        result = rt.text.explain(model_id=body.model_id, text=body.text, method=body.method,
                                 target=body.target, actor=who.name)
    metrics.EXPLANATIONS.labels(f"text:{body.method}", "ok").inc()
    return result


@router.get("/v1/jobs/{job_id}", tags=["decisions"])
def job(job_id: Uuid, request: Request, rt: RT, who: Who) -> dict[str, Any]:
    """An explanation job: queued, running, done (with its report) or failed."""
    _require(who, *STAFF)
    row = rt.decider.jobs.get(job_id)
    base = str(request.base_url).rstrip("/")
    return {"job_id": row["id"], "decision_id": row["decision_id"], "status": row["status"],
            "methods": json.loads(row["methods_json"]), "attempts": row["attempts"],
            "created_at": rfc3339(row["created_at"]),
            "finished_at": rfc3339(row["finished_at"]), "error": row["error"],
            "report_url": f"{base}/v1/decisions/{row['decision_id']}/report"
            if row["status"] == "done" else None}


# ---------------------------------------------------------------------- reviews
@router.post("/v1/decisions/{decision_id}/reviews", tags=["reviews"], status_code=201)
def ask_review(decision_id: Uuid, body: ReviewRequest, rt: RT, who: Who
               ) -> dict[str, Any]:
    """The person decided about asks for a human review (or contests, or asks for more
    detail); the answer gives the due date under the service level."""
    row = _own_decision(rt, who, decision_id)
    if not who.has("subject", "admin") or (who.has("subject") and
                                            row["subject_ref"] != who.subject_ref):
        raise HTTPException(403, "role: only the subject of the decision asks for its "
                                 "review")
    return rt.decider.request_review(decision_id, requested_by=who.name, reason=body.reason,
                                     kind=body.kind)


@router.get("/v1/reviews", tags=["reviews"])
def review_queue(rt: RT, who: Who, limit: Annotated[int, Query(ge=1, le=200)] = 50,
                 offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0
                 ) -> list[dict[str, Any]]:
    """Pending requests, the earliest due first."""
    _require(who, "reviewer", "compliance_officer")
    return [_review_out(r) for r in rt.store.review_queue(limit=limit, offset=offset)]


@router.get("/v1/reviews/{review_id}", tags=["reviews"])
def review(review_id: Uuid, rt: RT, who: Who) -> dict[str, Any]:
    row = rt.store.review(review_id)
    if not who.has("reviewer", "compliance_officer", "auditor", "admin"):
        _own_decision(rt, who, row["decision_id"])  # 404 unless it is theirs
        return {k: v for k, v in _review_out(row).items()
                if k in ("review_id", "decision_id", "kind", "status", "requested_at",
                         "due_at", "decided_at")}
    out = _review_out(row)
    out["steps"] = [{"action": s["action"], "actor": s["actor"], "role": s["role"],
                     "at": rfc3339(s["at"])} for s in row["steps"]]
    return out


@router.post("/v1/reviews/{review_id}/claim", tags=["reviews"])
def claim_review(review_id: Uuid, rt: RT, who: Who) -> dict[str, Any]:
    _require(who, "reviewer")
    leaf = rt.store.claim_review(review_id, reviewer=who.name, role="reviewer")
    return {"review_id": review_id, "claimed_by": who.name, "leaf_index": leaf}


@router.post("/v1/reviews/{review_id}/release", tags=["reviews"])
def release_review(review_id: Uuid, rt: RT, who: Who) -> dict[str, Any]:
    _require(who, "reviewer")
    leaf = rt.store.claim_review(review_id, reviewer=who.name, role="reviewer", release=True)
    return {"review_id": review_id, "claimed_by": None, "leaf_index": leaf}


@router.post("/v1/reviews/{review_id}/decision", tags=["reviews"])
def decide_review(review_id: Uuid, body: ReviewDecision, rt: RT, who: Who
                  ) -> dict[str, Any]:
    """Confirm, override or reverse the decision, with a rationale."""
    _require(who, "reviewer")
    leaf = rt.store.decide_review(review_id, outcome=body.outcome, reviewer=who.name,
                                  role="reviewer", rationale=body.rationale)
    return {"review_id": review_id, "status": body.outcome, "leaf_index": leaf,
            "receipt": rt.store.receipt(leaf).to_dict()}


def _review_out(r: dict[str, Any]) -> dict[str, Any]:
    return {"review_id": r["id"], "decision_id": r["decision_id"],
            "kind": r.get("kind") or "human_review", "status": r["status"],
            "reason": r["reason"], "requested_by": r["requested_by"],
            "requested_at": rfc3339(r["requested_at"]), "due_at": rfc3339(r.get("due_at")),
            "claimed_by": r.get("claimed_by"), "reviewer": r["reviewer"],
            "decided_at": rfc3339(r["decided_at"]), "rationale": r["rationale"]}


# ---------------------------------------------------------------------- alerts
ALERT_READERS = ("compliance_officer", "auditor", "admin")


@router.get("/v1/alerts", tags=["alerts"])
def alerts(rt: RT, who: Who, open_only: bool = False,
           limit: Annotated[int, Query(ge=1, le=500)] = 100,
           offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0) -> list[dict[str, Any]]:
    """Alerts, newest first, with the state of their webhook deliveries."""
    _require(who, *ALERT_READERS)
    return list_alerts(rt.store, open_only=open_only, limit=limit, offset=offset)


@router.post("/v1/alerts/{alert_id}/ack", tags=["alerts"])
def acknowledge_alert(alert_id: Uuid, rt: RT, who: Who) -> dict[str, Any]:
    """Acknowledge an alert (an alert of the same kind can then be raised again)."""
    _require(who, "compliance_officer", "admin")
    acknowledge(rt.store, alert_id, who.name)
    return {"alert_id": alert_id, "acknowledged_by": who.name}


# ---------------------------------------------------------------------- audit
def _b64(items: list[bytes]) -> list[str]:
    return [base64.b64encode(h).decode() for h in items]


@router.get("/v1/audit/checkpoint", tags=["audit"], openapi_extra=PUBLIC)
def checkpoint(rt: RT) -> dict[str, Any]:
    """The latest signed checkpoint (C2SP signed note) and the keys that verify it.
    Public: it commits to the log without revealing any entry."""
    latest = rt.store.log.latest_checkpoint() or rt.store.log.checkpoint()
    return {"origin": rt.store.log.origin, "size": latest[0], "checkpoint": latest[1],
            "verifier_keys": [v.encode() for v in rt.store.log.verifiers()]}


@router.get("/v1/audit/proofs/inclusion", tags=["audit"])
def inclusion(rt: RT, who: Who, index: Annotated[int, Query(ge=0, le=2**56)],
              size: Annotated[int | None, Query(ge=1, le=2**56)] = None) -> dict[str, Any]:
    """RFC 9162 inclusion proof of entry ``index`` in the tree of ``size`` entries
    (default: the latest checkpoint's size)."""
    _require(who, *AUDIT_READERS)
    size = size if size is not None else _checkpoint_size(rt)
    if index >= size:
        raise InvalidInputError("index", f"must be below the tree size {size}", index)
    return {"index": index, "size": size,
            "proof": _b64(rt.store.log.inclusion_proof(index, size))}


@router.get("/v1/audit/proofs/consistency", tags=["audit"])
def consistency(rt: RT, who: Who, old: Annotated[int, Query(ge=1, le=2**56)],
                new: Annotated[int | None, Query(ge=1, le=2**56)] = None) -> dict[str, Any]:
    """RFC 9162 consistency proof between the trees of ``old`` and ``new`` entries."""
    _require(who, *AUDIT_READERS)
    new = new if new is not None else _checkpoint_size(rt)
    if old > new:
        raise InvalidInputError("old", f"must not exceed new ({new})", old)
    return {"old": old, "new": new, "proof": _b64(rt.store.log.consistency_proof(old, new))}


@router.get("/v1/audit/entries", tags=["audit"])
def entries(rt: RT, who: Who, start: Annotated[int, Query(ge=0, le=2**56)] = 0,
            end: Annotated[int | None, Query(ge=1, le=2**56)] = None) -> dict[str, Any]:
    """Log entries ``start`` to ``end`` (exclusive, at most 1000): their bodies hold
    identifiers, commitments and hashes, never personal data."""
    _require(who, *AUDIT_READERS)
    from sqlalchemy import select

    from xai_sandbox.store import tables as t

    size = rt.store.log.size()
    end = min(end if end is not None else size, size, start + 1000)
    if start > end:
        raise InvalidInputError("start", f"must not exceed the end of the range ({end})",
                                start)
    with rt.store.engine.connect() as conn:
        rows = conn.execute(select(t.log_entries).where(
            t.log_entries.c.idx >= start, t.log_entries.c.idx < end)
            .order_by(t.log_entries.c.idx)).mappings().all()
    return {"start": start, "end": end, "size": size, "entries": [
        {"index": r["idx"], "kind": r["kind"], "record_id": r["record_id"],
         "leaf_hash": base64.b64encode(bytes(r["leaf_hash"])).decode(),
         "body": json.loads(bytes(r["body"]))} for r in rows]}


def _checkpoint_size(rt: Runtime) -> int:
    latest = rt.store.log.latest_checkpoint() or rt.store.log.checkpoint()
    if latest[0] == 0:
        raise NotFoundError("size", "needs a non-empty log", 0)
    return latest[0]
