"""The web console under ``/console``: server-rendered pages (Jinja2) for the people who
never call the API.

- The person decided about: their decisions, the reasons in plain language, what they
  could change, their rights, a form to ask for a human review and its status.
- Reviewers: the queue by due date, claim, the full report, decide with a rationale.
- Compliance officers and auditors: search and filter decisions, full reports (PDF and
  JSON), the audit log (checkpoint, receipts, consistency, full verification), alerts,
  drift and fairness charts.
- Operators: models with fingerprint, schema, anchors and policy; the explanation
  success rate.

Every page is a library call, like the API's routes, under the same roles; every page
that shows a report writes the same access event as the API. Sign-in turns an API key
into a session cookie (:mod:`xai_sandbox.service.sessions`); every form carries the
session's CSRF token. Text comes from ``data/console/messages.yaml`` (English, Chinese).
"""

from __future__ import annotations

import base64
import functools
import hmac
import json
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import yaml
from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select

from xai_sandbox.audit.log import Receipt, check_receipt
from xai_sandbox.audit.merkle import ProofError, verify_consistency
from xai_sandbox.audit.notes import NoteError, parse_checkpoint, verify_note
from xai_sandbox.errors import InvalidInputError, NotFoundError
from xai_sandbox.models.schema import LOCALES
from xai_sandbox.monitor.alerts import acknowledge, list_alerts
from xai_sandbox.reports.render import (
    _png_data_uri,
    environment,
    render_json,
    render_pdf,
    report_context,
)
from xai_sandbox.service.background import Verifications
from xai_sandbox.service.deps import (
    Runtime,
    limit_reads,
    read_report,
    request_locale,
    require,
)
from xai_sandbox.service.sessions import Session
from xai_sandbox.store import tables as t
from xai_sandbox.store.accounts import Principal
from xai_sandbox.store.entries import rfc3339
from xai_sandbox.store.store import (
    RELIABILITY_LEVELS,
    REVIEW_KINDS,
    REVIEW_OUTCOMES,
    REVIEW_STATES,
    DecisionFilter,
)

__all__ = ["COOKIE", "SignInRequiredError", "Verifications", "error_page", "router"]

router = APIRouter(prefix="/console", include_in_schema=False)

COOKIE = "xai_console"
SIGNIN_COOKIE = "xai_signin"
LANG_COOKIE = "xai_lang"
PAGE_SIZE = 50
# Content-Security-Policy of every console page: scripts from this origin only; the
# report's heat table colours its cells with style attributes; charts are data: PNGs.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")

REPORT_PAGES = ("compliance_officer", "auditor", "admin")
AUDIT_PAGES = ("auditor", "compliance_officer", "admin")
QUEUE_PAGES = ("reviewer", "compliance_officer", "admin")
OPERATOR_PAGES = ("operator", "admin")
# (path, message key, roles that see it), in the order of the navigation bar.
NAV = (("/console/my", "nav.my_decisions", ("subject",)),
       ("/console/reviews", "nav.reviews", QUEUE_PAGES),
       ("/console/decisions", "nav.decisions", REPORT_PAGES),
       ("/console/audit", "nav.audit", AUDIT_PAGES),
       ("/console/alerts", "nav.alerts", AUDIT_PAGES),
       ("/console/monitoring", "nav.monitoring", REPORT_PAGES),
       ("/console/models", "nav.models", OPERATOR_PAGES))
NOTICES = ("review_requested", "review_claimed", "review_released", "review_decided",
           "alert_acknowledged", "signed_out")


class SignInRequiredError(Exception):
    """No live session: the visitor is sent to sign in, and back to ``next`` after."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


# ---------------------------------------------------------------------- text
@functools.lru_cache(maxsize=1)
def messages() -> dict[str, dict[str, str]]:
    """The console's words: message key -> locale -> text."""
    raw = resources.files("xai_sandbox").joinpath("data/console/messages.yaml").read_text(
        encoding="utf-8")
    catalogue: dict[str, dict[str, str]] = yaml.safe_load(raw)
    return catalogue


def translator(lang: str) -> Any:
    catalogue = messages()

    def t_(key: str, **values: Any) -> str:
        text = catalogue[key][lang]
        return text.format(**values) if values else text

    return t_


def _lang(request: Request) -> str:
    """``?lang=``, else the language cookie, else the API's rule (Accept-Language)."""
    for value in (request.query_params.get("lang"), request.cookies.get(LANG_COOKIE)):
        if value in LOCALES:
            return value
    return request_locale(request, None)


def _render(request: Request, template: str, *, status: int = 200,
            session: Session | None = None, **values: Any) -> HTMLResponse:
    lang = _lang(request)
    who = session.principal if session is not None else None
    nav = [{"href": href, "label": key, "current": request.url.path.startswith(href)}
           for href, key, roles in NAV if who is not None and who.has(*roles)]
    notice = request.query_params.get("notice")
    html = environment().get_template(f"console/{template}").render(
        t=translator(lang), lang=lang, who=who, csrf=session.csrf if session else None,
        nav=nav, path=request.url.path, lang_urls={code: _with(request, lang=code)
                                                   for code in LOCALES},
        notice=notice if notice in NOTICES else None, **values)
    response = HTMLResponse(html, status_code=status)
    _page_headers(response)
    if request.query_params.get("lang") in LOCALES:
        response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, path="/console",
                            samesite="strict", secure=_secure(request))
    return response


def _with(request: Request, **values: str) -> str:
    """This page's URL with ``values`` set in its query (and no notice)."""
    query = [(k, v) for k, v in request.query_params.multi_items()
             if k not in values and k != "notice"]
    return f"{request.url.path}?{urlencode([*query, *values.items()])}"


def _page_headers(response: Response) -> None:
    response.headers["content-security-policy"] = CSP
    response.headers["x-frame-options"] = "DENY"
    response.headers["referrer-policy"] = "same-origin"


def _secure(request: Request) -> bool:
    rt: Runtime = request.app.state.rt
    return rt.settings.console_secure_cookie


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    """The console's answer to an error: the same message the API gives, as a page."""
    rt: Runtime = request.app.state.rt
    session = rt.sessions.resolve(request.cookies.get(COOKIE))
    title = {403: "error.forbidden", 404: "error.not_found", 409: "error.conflict"}.get(
        status, "error.invalid" if 400 <= status < 500 else "error.server")
    return _render(request, "error.html", status=status, session=session, title=title,
                   message=message)


# ---------------------------------------------------------------------- the request
@dataclass
class Page:
    """One signed-in request: the runtime and the session."""

    request: Request
    rt: Runtime
    session: Session

    @property
    def who(self) -> Principal:
        return self.session.principal

    def require(self, *roles: str) -> None:
        require(self.who, *roles)

    def render(self, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        return _render(self.request, template, status=status, session=self.session,
                       **values)

    def check_csrf(self, token: str | None) -> None:
        if not token or not hmac.compare_digest(token.encode(), self.session.csrf.encode()):
            raise HTTPException(403, "csrf: the form's token is missing or does not match "
                                     "this sign-in; reload the page and send it again")


def signed_in(request: Request) -> Page:
    """The signed-in request, or a redirect to sign in (and back here after)."""
    rt: Runtime = request.app.state.rt
    session = rt.sessions.resolve(request.cookies.get(COOKIE))
    if session is None:
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInRequiredError(here)
    return Page(request, rt, session)


P = Annotated[Page, Depends(signed_in)]
Csrf = Annotated[str | None, Form()]


def _redirect(path: str, **query: str) -> RedirectResponse:
    return RedirectResponse(path + (f"?{urlencode(query)}" if query else ""),
                            status_code=303)


def _safe_next(value: str | None) -> str | None:
    """Only a path of this console: never another site (open redirects)."""
    if value and value.startswith("/console/") and not value.startswith("//") \
            and "\\" not in value and "://" not in value:
        return value
    return None


# ---------------------------------------------------------------------- sign-in
@router.get("/sign-in")
def sign_in_form(request: Request, next: Annotated[str | None, Query(max_length=500)] = None
                 ) -> Response:
    """The sign-in form. Its CSRF token is a random value also set as a cookie (double
    submit): a form posted from elsewhere cannot read it."""
    rt: Runtime = request.app.state.rt
    if rt.sessions.resolve(request.cookies.get(COOKIE)) is not None:
        return _redirect(_safe_next(next) or "/console/")
    token = request.cookies.get(SIGNIN_COOKIE) or secrets.token_urlsafe(32)
    response = _render(request, "sign_in.html", signin_csrf=token, next=_safe_next(next),
                       error=None)
    response.set_cookie(SIGNIN_COOKIE, token, max_age=3600, path="/console",
                        httponly=True, samesite="strict", secure=_secure(request))
    return response


@router.post("/sign-in")
def sign_in(request: Request, key: Annotated[str, Form(max_length=200)] = "",
            csrf: Csrf = None, next: Annotated[str | None, Form(max_length=500)] = None
            ) -> Response:
    rt: Runtime = request.app.state.rt
    expected = request.cookies.get(SIGNIN_COOKIE)
    if not csrf or not expected or not hmac.compare_digest(csrf.encode(), expected.encode()):
        raise HTTPException(403, "csrf: the form's token is missing or does not match; "
                                 "reload the sign-in page and send it again")
    wait = rt.key_limit.take(f"sign-in:{request.client.host if request.client else '?'}")
    if wait:
        raise HTTPException(429, f"rate limit: too many sign-in attempts; retry in "
                                 f"{int(wait)} s", headers={"Retry-After": str(int(wait))})
    session = rt.sessions.start(key) if key.strip() else None
    if session is None:
        return _render(request, "sign_in.html", status=401, signin_csrf=expected,
                       next=_safe_next(next), error="sign_in.unknown_key")
    response = _redirect(_safe_next(next) or "/console/")
    max_age = int((session.expires_at - datetime.now(UTC)).total_seconds())
    response.set_cookie(COOKIE, session.token, max_age=max_age, path="/console",
                        httponly=True, samesite="strict", secure=_secure(request))
    response.delete_cookie(SIGNIN_COOKIE, path="/console")
    return response


@router.post("/sign-out")
def sign_out(p: P, csrf: Csrf = None) -> Response:
    p.check_csrf(csrf)
    p.rt.sessions.end(p.session.token)
    response = _redirect("/console/sign-in", notice="signed_out")
    response.delete_cookie(COOKIE, path="/console")
    return response


@router.get("/")
def home(p: P) -> Response:
    """The first page of the principal's navigation."""
    for href, _, roles in NAV:
        if p.who.has(*roles):
            return _redirect(href)
    raise HTTPException(403, "role: no console page for your roles")  # pragma: no cover


# ---------------------------------------------------------------------- the subject
def _pages(total: int, capped: bool, page: int, size: int) -> dict[str, Any]:
    last = max((total - 1) // size + 1, 1)
    return {"page": page, "size": size, "total": total, "capped": capped,
            "first_row": (page - 1) * size + 1 if total else 0,
            "last_row": min(page * size, total), "has_prev": page > 1,
            "has_next": page < last or capped, "last": last}


def _page_url(request: Request, page: int) -> str:
    return _with(request, page=str(page))


PageNo = Annotated[int, Query(ge=1, le=100_000)]


@router.get("/my")
def my_decisions(p: P, page: PageNo = 1) -> HTMLResponse:
    """The subject's own decisions, newest first."""
    p.require("subject")
    assert p.who.subject_ref is not None
    rows = p.rt.store.decisions_of(p.who.subject_ref, limit=21, offset=(page - 1) * 20)
    lang = _lang(p.request)
    outputs = [json.loads(r["output_json"]) for r in rows[:20]]
    items = [{"id": r["id"], "case_ref": r["case_ref"], "decided_at": rfc3339(r["decided_at"]),
              "outcome": (o.get("label") or {}).get(lang, o.get("decision"))}
             for r, o in zip(rows, outputs, strict=False)]
    return p.render("my_decisions.html", items=items, page=page, has_next=len(rows) > 20,
                    prev_url=_page_url(p.request, page - 1),
                    next_url=_page_url(p.request, page + 1))


def _uuid(name: str, value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError as exc:
        raise NotFoundError(name, "must be a recorded id", value) from exc


@router.get("/my/{decision_id}")
async def my_decision(decision_id: str, p: P) -> HTMLResponse:
    """One of the subject's decisions as they read it (the API's subject view); anyone
    else's decision is not found, the same answer as an unknown id."""
    p.require("subject")
    decision_id = _uuid("decision_id", decision_id)
    lang = _lang(p.request)
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
    decision_id = _uuid("decision_id", decision_id)
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
    return _redirect(f"/console/my/{decision_id}", notice="review_requested")


# ---------------------------------------------------------------------- reviewers
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
                    has_next=len(rows) > PAGE_SIZE, prev_url=_page_url(p.request, page - 1),
                    next_url=_page_url(p.request, page + 1))


def _full_report(p: Page, decision_id: str, action: str, purpose: str
                 ) -> Mapping[str, Any]:
    """The full report, read under the API's rule: the same roles, limits and access
    event (written before the report is assembled, so the report lists it)."""
    return read_report(p.rt, p.who, decision_id, action, purpose)


@router.get("/reviews/{review_id}")
def review_page(review_id: str, p: P) -> HTMLResponse:
    """A request with the full report of its decision; claim, release and decide."""
    p.require(*QUEUE_PAGES)
    review = p.rt.store.review(_uuid("review_id", review_id))
    report = _full_report(p, review["decision_id"], "read", "review")
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
    review_id = _uuid("review_id", review_id)
    p.rt.store.claim_review(review_id, reviewer=p.who.name, role="reviewer", release=release)
    return _redirect(f"/console/reviews/{review_id}",
                     notice="review_released" if release else "review_claimed")


@router.post("/reviews/{review_id}/decision")
def decide(review_id: str, p: P, csrf: Csrf = None, outcome: Annotated[str, Form()] = "",
           rationale: Annotated[str, Form(max_length=4000)] = "") -> Response:
    """Confirm, override or reverse the decision, with a rationale."""
    p.check_csrf(csrf)
    p.require("reviewer")
    review_id = _uuid("review_id", review_id)
    if not rationale.strip():
        raise InvalidInputError("rationale", "must explain the outcome (1 to 4000 "
                                             "characters)", rationale)
    p.rt.store.decide_review(review_id, outcome=outcome, reviewer=p.who.name,
                             role="reviewer", rationale=rationale.strip())
    return _redirect("/console/reviews", notice="review_decided")


# ---------------------------------------------------------------------- compliance
def _day(name: str, value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC)
    except ValueError as exc:
        raise InvalidInputError(name, "must be a date YYYY-MM-DD", value) from exc


def _choice(name: str, value: str | None, allowed: tuple[str, ...]) -> str | None:
    if not value:
        return None
    if value not in allowed:
        raise InvalidInputError(name, f"must be one of {list(allowed)}", value)
    return value


Text = Annotated[str | None, Query(max_length=260)]


@router.get("/decisions")
def decisions(p: P, model: Text = None, since: Text = None, until: Text = None,
              outcome: Text = None, anchor: Text = None, reliability: Text = None,
              review: Text = None, page: PageNo = 1) -> HTMLResponse:
    """Decisions, newest first, filtered by model, dates (``until`` inclusive), outcome,
    anchor hits, reliability and review status, in pages of 50."""
    p.require(*REPORT_PAGES)
    models = {m.key: m for m in p.rt.decider.models()}
    outcomes = sorted({c for m in models.values() for c in m.policy.outcome_labels})
    end = _day("until", until)
    where = DecisionFilter(
        model_key=_choice("model", model, tuple(models)), since=_day("since", since),
        until=end + timedelta(days=1) if end is not None else None,
        outcome=_choice("outcome", outcome, tuple(outcomes)),
        anchor_hit={"yes": True, "no": False, None: None}[_choice("anchor", anchor,
                                                                  ("yes", "no"))],
        reliability=_choice("reliability", reliability, RELIABILITY_LEVELS),
        review_status=_choice("review", review, REVIEW_STATES))
    rows, total, capped = p.rt.store.search_decisions(where, limit=PAGE_SIZE,
                                                      offset=(page - 1) * PAGE_SIZE)
    lang = _lang(p.request)
    items = [{**r, "decided_at": rfc3339(r["decided_at"]),
              "label": _label(models, r["model_key"], r["outcome"], lang)} for r in rows]
    return p.render("decisions.html", items=items, models=sorted(models),
                    outcomes=outcomes, outcome_labels={
                        c: f"{_label(models, k, c, lang)} ({c})" for k in models
                        for c in outcomes if c in models[k].policy.outcome_labels},
                    reliabilities=RELIABILITY_LEVELS, review_states=REVIEW_STATES,
                    f={"model": model or "", "since": since or "", "until": until or "",
                       "outcome": outcome or "", "anchor": anchor or "",
                       "reliability": reliability or "", "review": review or ""},
                    pages=_pages(total, capped, page, PAGE_SIZE),
                    prev_url=_page_url(p.request, page - 1),
                    next_url=_page_url(p.request, page + 1))


def _label(models: dict[str, Any], key: str, outcome: str, lang: str) -> str:
    served = models.get(key)
    labels = served.policy.outcome_labels.get(outcome) if served is not None else None
    return labels[lang] if labels else outcome


@router.get("/decisions/{decision_id}")
def report_page(decision_id: str, p: P) -> HTMLResponse:
    """The full report (every field of COMPLIANCE.md), with PDF and JSON downloads."""
    p.require(*REPORT_PAGES)
    decision_id = _uuid("decision_id", decision_id)
    report = _full_report(p, decision_id, "read", "compliance review")
    return p.render("report.html", decision_id=decision_id, **report_context(report))


@router.get("/decisions/{decision_id}/report.{fmt}")
def report_download(decision_id: str, fmt: str, p: P) -> Response:
    """The full report as a PDF or canonical JSON file (an export: logged as such)."""
    p.require(*REPORT_PAGES)
    decision_id = _uuid("decision_id", decision_id)
    formats = {"pdf": (render_pdf, "application/pdf"),
               "json": (render_json, "application/json")}
    if fmt not in formats:
        raise NotFoundError("format", f"must be one of {sorted(formats)}", fmt)
    render, media_type = formats[fmt]
    report = _full_report(p, decision_id, "export", "export")
    return Response(render(report), media_type=media_type, headers={
        "Content-Disposition": f'attachment; filename="report-{decision_id}.{fmt}"'})


# ---------------------------------------------------------------------- audit log
def _audit_page(p: Page, status: int = 200, **values: Any) -> HTMLResponse:
    log = p.rt.store.log
    latest = log.latest_checkpoint()
    with p.rt.store.engine.connect() as conn:
        checkpoints = [{"size": r.size, "signed_at": rfc3339(r.signed_at)} for r in
                       conn.execute(select(t.checkpoints.c.size, t.checkpoints.c.signed_at)
                                    .order_by(t.checkpoints.c.size.desc()).limit(100))]
    values.setdefault("receipt", None)
    values.setdefault("consistency", None)
    return p.render("audit.html", status=status, latest=latest, origin=log.origin,
                    size=log.size(), keys=[v.encode() for v in log.verifiers()],
                    checkpoints=checkpoints, **values)


@router.get("/audit")
def audit(p: P) -> HTMLResponse:
    """The latest checkpoint and its key; receipts, consistency and full verification."""
    p.require(*AUDIT_PAGES)
    return _audit_page(p)


@router.post("/audit/receipt")
async def audit_receipt(p: P, csrf: Csrf = None,
                        receipt: Annotated[UploadFile | None, File()] = None) -> HTMLResponse:
    """Check an uploaded receipt offline: signature, leaf hash and inclusion proof."""
    p.check_csrf(csrf)
    p.require(*AUDIT_PAGES)
    if receipt is None:
        raise InvalidInputError("receipt", "must be a receipt file (JSON)", None)
    raw = await receipt.read()
    try:
        parsed = Receipt.from_json(raw)
        entry = check_receipt(parsed, p.rt.store.log.verifiers())
        result = {"ok": True, "entry": entry, "leaf_index": parsed.leaf_index,
                  "name": receipt.filename}
        status = 200
    except (InvalidInputError, NoteError, ProofError, ValueError) as exc:
        result = {"ok": False, "error": str(exc), "name": receipt.filename}
        status = 422
    return _audit_page(p, status=status, receipt=result)


@router.get("/audit/consistency")
def audit_consistency(p: P, old: Annotated[int, Query(ge=1, le=2**56)],
                      new: Annotated[int, Query(ge=1, le=2**56)]) -> HTMLResponse:
    """Prove that the log at one checkpoint extends the log at an earlier one, and check
    the proof against both signed roots here."""
    p.require(*AUDIT_PAGES)
    if old >= new:
        raise InvalidInputError("old", f"must be smaller than new ({new})", old)
    with p.rt.store.engine.connect() as conn:
        notes = {r.size: r.note for r in conn.execute(
            select(t.checkpoints.c.size, t.checkpoints.c.note).where(
                t.checkpoints.c.size.in_([old, new])))}
    for name, size in (("old", old), ("new", new)):
        if size not in notes:
            raise InvalidInputError(name, "must be the size of a signed checkpoint", size)
    verifiers = p.rt.store.log.verifiers()
    roots = {size: parse_checkpoint(verify_note(notes[size], verifiers)[0]).root
             for size in (old, new)}
    proof = p.rt.store.log.consistency_proof(old, new)
    try:
        verify_consistency(old, new, roots[old], roots[new], proof)
        ok, error = True, None
    except ProofError as exc:  # pragma: no cover - only a tampered store gets here
        ok, error = False, str(exc)
    result = {"old": old, "new": new, "ok": ok, "error": error,
              "old_root": base64.b64encode(roots[old]).decode(),
              "new_root": base64.b64encode(roots[new]).decode(),
              "proof": [base64.b64encode(h).decode() for h in proof]}
    return _audit_page(p, consistency=result)


@router.post("/audit/verify")
def audit_verify(p: P, csrf: Csrf = None) -> Response:
    """Start a full verification (or join the one running) and follow its progress."""
    p.check_csrf(csrf)
    p.require(*AUDIT_PAGES)
    run = p.rt.verifications.start(p.rt.store, p.who.name)
    return _redirect(f"/console/audit/verify/{run.id}")


@router.get("/audit/verify/{run_id}")
def audit_verify_page(run_id: str, p: P) -> HTMLResponse:
    p.require(*AUDIT_PAGES)
    return p.render("verify.html", run=p.rt.verifications.get(run_id).to_dict())


@router.get("/audit/verify/{run_id}/status")
def audit_verify_status(run_id: str, p: P) -> Response:
    """The progress as JSON, for the page's script."""
    p.require(*AUDIT_PAGES)
    return Response(json.dumps(p.rt.verifications.get(run_id).to_dict()),
                    media_type="application/json")


# ---------------------------------------------------------------------- alerts
@router.get("/alerts")
def alerts(p: P, open_only: Annotated[bool, Query()] = False, page: PageNo = 1
           ) -> HTMLResponse:
    p.require(*AUDIT_PAGES)
    rows = list_alerts(p.rt.store, open_only=open_only, limit=PAGE_SIZE + 1,
                       offset=(page - 1) * PAGE_SIZE)
    return p.render("alerts.html", items=rows[:PAGE_SIZE], open_only=open_only, page=page,
                    has_next=len(rows) > PAGE_SIZE, prev_url=_page_url(p.request, page - 1),
                    next_url=_page_url(p.request, page + 1),
                    can_ack=p.who.has("compliance_officer", "admin"))


@router.post("/alerts/{alert_id}/ack")
def acknowledge_alert(alert_id: str, p: P, csrf: Csrf = None) -> Response:
    p.check_csrf(csrf)
    p.require("compliance_officer", "admin")
    acknowledge(p.rt.store, _uuid("alert_id", alert_id), p.who.name)
    return _redirect("/console/alerts", notice="alert_acknowledged")


# ---------------------------------------------------------------------- monitoring
def _drift_chart(report: dict[str, Any]) -> str | None:
    features = report.get("features") or []
    if not features:
        return None
    items = sorted(features, key=lambda f: f["psi"])[-15:]

    def draw(ax: Any) -> None:
        ax.barh([f["feature"] for f in items], [f["psi"] for f in items],
                color=["#b2182b" if f["drifted"] else "#4d4d4d" for f in items])
        ax.axvline(0.25, color="#b2182b", linestyle="--", linewidth=0.8)
        ax.set_xlabel("PSI of the attribution, this window against the previous one "
                      "(dashed: 0.25)", fontsize=8)

    return _png_data_uri((6.4, 0.3 * len(items) + 1.0), draw)


def _fairness_chart(points: list[dict[str, float]]) -> str | None:
    if not points:
        return None

    def draw(ax: Any) -> None:
        x = list(range(1, len(points) + 1))
        ax.plot(x, [100 * q["protected"] for q in points], color="#b2182b", marker=".",
                label="protected features")
        ax.plot(x, [100 * q["proxy"] for q in points], color="#2166ac", marker=".",
                label="likely proxies")
        ax.set_xlabel("decisions, oldest to newest", fontsize=8)
        ax.set_ylabel("share of the attribution (%)", fontsize=8)
        ax.legend(fontsize=8)

    return _png_data_uri((6.4, 2.6), draw)


@router.get("/monitoring")
def monitoring(p: P, model: Text = None) -> HTMLResponse:
    """Explanation drift and the fairness shares of one model's recent reports."""
    from xai_sandbox.monitor.drift import drift_check, load_state

    p.require(*REPORT_PAGES)
    keys = [m.key for m in p.rt.decider.models()]
    if not keys:
        return p.render("monitoring.html", models=[], model=None, drift=None,
                        drift_chart=None, fairness=None, fairness_chart=None)
    key = _choice("model", model, tuple(keys)) or keys[0]
    drift = load_state(p.rt.store, f"drift:{key}").get(f"drift:{key}") or \
        drift_check(p.rt.store, key).to_dict()
    points: list[dict[str, float]] = []
    by_feature: dict[str, list[float]] = {}
    for _, body in p.rt.store.recent_reports(key, 200):
        fairness = body.get("fairness")
        if fairness is None:
            continue
        points.append({"protected": fairness["protected_share"],
                       "proxy": fairness["proxy_share"]})
        for name, share in fairness["by_feature"].items():
            by_feature.setdefault(name, []).append(share)
    summary = {"n": len(points),
               "protected": sum(q["protected"] for q in points) / len(points) if points
               else None,
               "proxy": sum(q["proxy"] for q in points) / len(points) if points else None,
               "by_feature": {k: sum(v) / len(v) for k, v in sorted(by_feature.items())}}
    return p.render("monitoring.html", models=keys, model=key, drift=drift,
                    drift_chart=_drift_chart(drift), fairness=summary,
                    fairness_chart=_fairness_chart(points))


# ---------------------------------------------------------------------- operators
@router.get("/models")
def models(p: P) -> HTMLResponse:
    """Each model's fingerprint, schema, anchors and explanation policy; the explanation
    success rate of the last 24 hours."""
    from xai_sandbox.monitor.drift import success_rates

    p.require(*OPERATOR_PAGES)
    items = []
    for served in p.rt.decider.models():
        items.append({**served.summary(), "schema": [
            {"name": f.name, "kind": f.kind, "protected": f.protected, "mutable": f.mutable}
            for f in served.schema.features]})
    rates = success_rates(p.rt.store, hours=24)
    explained = sum(r["explained"] for r in rates)
    failed = sum(r["failed"] for r in rates)
    return p.render("models.html", items=items, rates=rates, explained=explained,
                    failed=failed, rate=explained / (explained + failed)
                    if explained + failed else None)


def login_url(next_path: str) -> str:
    return f"/console/sign-in?next={quote(next_path, safe='')}"


@router.get("/static/console.js")
def script(p: P) -> Response:
    """The console's one script (served to signed-in pages only, like every page)."""
    body = resources.files("xai_sandbox").joinpath("data/console/console.js").read_bytes()
    return Response(body, media_type="text/javascript")
