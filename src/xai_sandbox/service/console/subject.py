"""The person decided about: their decisions, the reasons in plain language, what they
could change, their rights, a form to ask for a human review and its status."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import Form
from fastapi.responses import HTMLResponse, Response

from xai_sandbox.errors import InvalidInputError, NotFoundError
from xai_sandbox.service.console.pages import (
    Csrf,
    P,
    PageNo,
    area_router,
    as_uuid,
    page_lang,
    page_url,
    redirect,
)
from xai_sandbox.service.deps import limit_reads
from xai_sandbox.store.entries import rfc3339
from xai_sandbox.store.store import REVIEW_KINDS

router = area_router()


@router.get("/my")
def my_decisions(p: P, page: PageNo = 1) -> HTMLResponse:
    """The subject's own decisions, newest first."""
    p.require("subject")
    assert p.who.subject_ref is not None
    rows = p.rt.store.decisions_of(p.who.subject_ref, limit=21, offset=(page - 1) * 20)
    lang = page_lang(p.request)
    outputs = [json.loads(r["output_json"]) for r in rows[:20]]
    items = [{"id": r["id"], "case_ref": r["case_ref"], "decided_at": rfc3339(r["decided_at"]),
              "outcome": (o.get("label") or {}).get(lang, o.get("decision"))}
             for r, o in zip(rows, outputs, strict=False)]
    return p.render("my_decisions.html", items=items, page=page, has_next=len(rows) > 20,
                    prev_url=page_url(p.request, page - 1),
                    next_url=page_url(p.request, page + 1))


@router.get("/my/{decision_id}")
async def my_decision(decision_id: str, p: P) -> HTMLResponse:
    """One of the subject's decisions as they read it (the API's subject view); anyone
    else's decision is not found, the same answer as an unknown id."""
    p.require("subject")
    decision_id = as_uuid("decision_id", decision_id)
    lang = page_lang(p.request)
    view = p.rt.decider.subject_view(decision_id, lang, f"/console/my/{decision_id}#review",
                                     subject_ref=p.who.subject_ref or "")
    limit_reads(p.rt, p.who)
    await p.rt.access.record_async(record_type="decisions", record_id=decision_id,
                                   action="read", actor=p.who.name, role="subject",
                                   purpose="subject view")
    pending = {r["kind"] for r in view["reviews"] if r["status"] == "pending"}
    return p.render("my_decision.html", v=view, kinds=[k for k in REVIEW_KINDS
                                                       if k not in pending])


@router.post("/my/{decision_id}/review")
def ask_review(decision_id: str, p: P, csrf: Csrf = None,
               kind: Annotated[str, Form()] = "human_review",
               reason: Annotated[str, Form(max_length=4000)] = "") -> Response:
    """The subject asks for a human review (or contests, or asks for more detail)."""
    p.check_csrf(csrf)
    p.require("subject")
    decision_id = as_uuid("decision_id", decision_id)
    row = p.rt.store.decision(decision_id)
    if row["subject_ref"] != p.who.subject_ref:
        raise NotFoundError("decision_id", "must be a recorded decision", decision_id)
    if kind not in REVIEW_KINDS:
        raise InvalidInputError("kind", f"must be one of {list(REVIEW_KINDS)}", kind)
    if not reason.strip():
        raise InvalidInputError("reason", "must say in a few words why (1 to 4000 "
                                          "characters)", reason)
    p.rt.decider.request_review(decision_id, requested_by=p.who.name, reason=reason.strip(),
                                kind=kind, channel="console")
    return redirect(f"/console/my/{decision_id}", notice="review_requested")
