"""The subject view: what the person decided about reads, in their language."""

from __future__ import annotations

import json
from typing import Any

from xai_sandbox.errors import InvalidInputError, NotFoundError
from xai_sandbox.models.schema import LOCALES
from xai_sandbox.semantics.notices import (
    CONFIRMED_BY_PERSON,
    DECIDED_BY_PERSON,
    REVIEW_STATUS,
    RIGHTS,
    subject_text,
)
from xai_sandbox.store.entries import rfc3339
from xai_sandbox.workflows.context import Context
from xai_sandbox.workflows.reading import final_outcome

__all__ = ["deployer_name", "subject_texts", "subject_view"]


def subject_view(ctx: Context, decision_id: str, locale: str, review_link: str,
                 subject_ref: str | None = None) -> dict[str, Any]:
    """What the person decided about reads: no raw numbers, at most four reasons.

    With ``subject_ref``, a decision of anyone else is reported as not found (the same
    answer as an unknown id, so ids cannot be probed)."""
    if locale not in LOCALES:
        raise InvalidInputError("locale", f"must be one of {list(LOCALES)}", locale)
    row, report_id, reviews = ctx.store.decision_with_report(decision_id)
    if subject_ref is not None and row["subject_ref"] != subject_ref:
        raise NotFoundError("decision_id", "must be a recorded decision", decision_id)
    texts = subject_texts(ctx, report_id) if report_id is not None else None
    output = json.loads(row["output_json"])
    final = final_outcome(ctx.model_by_key(row["model_key"]), output, reviews)
    note = None
    if final["decided_by"] == "person":
        status = REVIEW_STATUS[locale][final["review_status"]]
        date = final["decided_at"][:10]
        note = (CONFIRMED_BY_PERSON[locale].format(date=date)
                if final["review_status"] == "confirmed" else
                DECIDED_BY_PERSON[locale].format(date=date, status=status,
                                                 original=output["label"][locale]))
    view: dict[str, Any] = {
        "decision_id": decision_id, "case_ref": row["case_ref"],
        "decided_at": rfc3339(row["decided_at"]), "locale": locale,
        "outcome": final["label"][locale],
        "outcome_decided_by": final["decided_by"],
        "outcome_decided_at": final["decided_at"] or rfc3339(row["decided_at"]),
        "automated_outcome": output["label"][locale], "outcome_note": note,
        "deployer": {"name": deployer_name(ctx, locale),
                     "contact": ctx.settings.deployer_contact}}
    if texts is None:
        view.update({"explanation_status": "pending", "reasons": [],
                     "what_you_could_change": None, "caveat": None})
    else:
        view.update({"explanation_status": "ready", **texts[locale]})
    view["outcome"] = final["label"][locale]   # the texts name the automated outcome
    view["rights"] = [{"right": r, "text": t, "link": review_link}
                      for r, t in RIGHTS[locale]]
    view["reviews"] = [{"review_id": r["id"], "kind": r["kind"] or "human_review",
                        "status": r["status"],
                        "status_text": REVIEW_STATUS[locale].get(r["status"], r["status"]),
                        "requested_at": rfc3339(r["requested_at"]),
                        "due_at": rfc3339(r["due_at"]),
                        "decided_at": rfc3339(r["decided_at"])} for r in reviews]
    human = [r for r in reviews if (r["kind"] or "human_review") == "human_review"]
    view["review_status"] = human[-1]["status"] if human else "not_required"
    return view


def deployer_name(ctx: Context, locale: str) -> str:
    """The deployer's name as the subject reads it in ``locale``."""
    zh = ctx.settings.deployer_name_zh
    return zh if locale == "zh" and zh else ctx.settings.deployer_name


def subject_texts(ctx: Context, report_id: str) -> dict[str, dict[str, Any]]:
    """The subject's words of a report, per locale; reports never change, so the
    parsed texts are kept (bounded) and a read does not parse the report again."""
    found = ctx.cached_texts(report_id)
    if found is not None:
        return found
    body = ctx.store.report_body(report_id)
    texts = {loc: {**subject_text(body, loc),
                   "data_sources": body["input"].get("data_sources_by_locale", {}).get(
                       loc, body["input"]["data_sources"]),
                   "explained_at": body["decision"]["explained_at"]} for loc in LOCALES}
    ctx.cache_texts(report_id, texts)
    return texts
