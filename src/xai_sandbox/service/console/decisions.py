"""Compliance officers and auditors: search and filter decisions; the full report as a
page, PDF and JSON (every read and export writes the API's access event)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from fastapi.responses import HTMLResponse, Response

from xai_sandbox.errors import InvalidInputError, NotFoundError
from xai_sandbox.reports.render import render_json, render_pdf, report_context
from xai_sandbox.service.console.pages import (
    PAGE_SIZE,
    REPORT_PAGES,
    P,
    PageNo,
    Text,
    area_router,
    as_uuid,
    choice,
    full_report,
    page_lang,
    page_url,
    pager,
)
from xai_sandbox.store.entries import rfc3339
from xai_sandbox.store.store import RELIABILITY_LEVELS, REVIEW_STATES, DecisionFilter

router = area_router()


def _day(name: str, value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC)
    except ValueError as exc:
        raise InvalidInputError(name, "must be a date YYYY-MM-DD", value) from exc


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
        model_key=choice("model", model, tuple(models)), since=_day("since", since),
        until=end + timedelta(days=1) if end is not None else None,
        outcome=choice("outcome", outcome, tuple(outcomes)),
        anchor_hit={"yes": True, "no": False, None: None}[choice("anchor", anchor,
                                                                  ("yes", "no"))],
        reliability=choice("reliability", reliability, RELIABILITY_LEVELS),
        review_status=choice("review", review, REVIEW_STATES))
    rows, total, capped = p.rt.store.search_decisions(where, limit=PAGE_SIZE,
                                                      offset=(page - 1) * PAGE_SIZE)
    lang = page_lang(p.request)
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
                    pages=pager(total, capped, page, PAGE_SIZE),
                    prev_url=page_url(p.request, page - 1),
                    next_url=page_url(p.request, page + 1))


def _label(models: dict[str, Any], key: str, outcome: str, lang: str) -> str:
    served = models.get(key)
    labels = served.policy.outcome_labels.get(outcome) if served is not None else None
    return labels[lang] if labels else outcome


@router.get("/decisions/{decision_id}")
def report_page(decision_id: str, p: P) -> HTMLResponse:
    """The full report (every field of COMPLIANCE.md), with PDF and JSON downloads."""
    p.require(*REPORT_PAGES)
    decision_id = as_uuid("decision_id", decision_id)
    report = full_report(p, decision_id, "read", "compliance review")
    return p.render("report.html", decision_id=decision_id, **report_context(report))


@router.get("/decisions/{decision_id}/report.{fmt}")
def report_download(decision_id: str, fmt: str, p: P) -> Response:
    """The full report as a PDF or canonical JSON file (an export: logged as such)."""
    p.require(*REPORT_PAGES)
    decision_id = as_uuid("decision_id", decision_id)
    formats = {"pdf": (render_pdf, "application/pdf"),
               "json": (render_json, "application/json")}
    if fmt not in formats:
        raise NotFoundError("format", f"must be one of {sorted(formats)}", fmt)
    render, media_type = formats[fmt]
    report = full_report(p, decision_id, "export", "export")
    return Response(render(report), media_type=media_type, headers={
        "Content-Disposition": f'attachment; filename="report-{decision_id}.{fmt}"'})
