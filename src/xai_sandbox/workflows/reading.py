"""Read a decision back: the outcome that stands after any review, and the full report of
COMPLIANCE.md (the stored report with the live record around it)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from xai_sandbox.monitor.alerts import list_alerts
from xai_sandbox.reports.report import Report
from xai_sandbox.semantics.notices import DECIDING_KINDS, DEFAULT_REGIMES
from xai_sandbox.store.entries import rfc3339
from xai_sandbox.workflows.context import Context
from xai_sandbox.workflows.served import ServedModel

__all__ = ["final_outcome", "full_report"]


def final_outcome(served: ServedModel, output: Mapping[str, Any],
                  reviews: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The outcome that stands: the model's, or the latest decided human review or
    contest's. ``overridden`` and ``reversed`` turn an adverse decision into the most
    probable favourable class, and a favourable one into the adverse class; the log
    holds both the automated decision and the review that changed it."""
    decided = [r for r in reviews if (r["kind"] or "human_review") in DECIDING_KINDS
               and r["status"] in ("confirmed", "overridden", "reversed")]
    original = {"decision": output["decision"], "label": dict(output["label"]),
                "adverse": bool(output["adverse"])}
    if not decided:
        return {**original, "decided_by": "model", "decided_at": None,
                "review_status": None, "review_id": None, "original": original}
    last = max(decided, key=lambda r: r["decided_at"])
    decision, adverse = original["decision"], original["adverse"]
    if last["status"] != "confirmed":
        policy = served.policy
        if adverse:
            probs = output.get("probabilities") or {}
            others = [c for c in served.model.class_names if c != policy.adverse_class]
            decision = max(others, key=lambda c: float(probs.get(c, 0.0)))
        else:
            decision = policy.adverse_class
        adverse = not adverse
    return {"decision": decision, "label": dict(served.policy.outcome_labels[decision]),
            "adverse": adverse, "decided_by": "person",
            "decided_at": rfc3339(last["decided_at"]), "review_status": last["status"],
            "review_id": last["id"], "original": original}


def full_report(ctx: Context, decision_id: str) -> Report:
    """Every field of COMPLIANCE.md: the stored report plus the live record (reviews,
    requests, access log, retention) and a receipt for the report's log entry."""
    row = ctx.store.decision(decision_id)
    stored = ctx.store.latest_report(decision_id)
    reviews = ctx.store.reviews_of(decision_id)
    accesses = ctx.store.accesses_of(decision_id)
    output = json.loads(row["output_json"])
    served = ctx.model_by_key(row["model_key"])
    if stored is not None:
        report = Report.from_dict(stored["body"])
        receipt = ctx.store.receipt(ctx.store.leaf_of(f"reports:{stored['id']}"))
        report_meta = {"report_id": stored["id"], "report_sha256": stored["sha256"],
                       "created_at": rfc3339(stored["created_at"])}
    else:
        report = Report(
            decision={"decision_id": decision_id, "case_ref": row["case_ref"],
                      "subject_ref": row["subject_ref"],
                      "decided_at": rfc3339(row["decided_at"]), "explained_at": None},
            model={"model_id": served.model.model_id, "version": served.model.version,
                   "fingerprint_sha256": served.model.fingerprint},
            output=output, explanation_status="pending or not required")
        receipt = ctx.store.receipt(ctx.store.leaf_of(f"decisions:{decision_id}"))
        report_meta = None
    erased = ctx.store.payload(decision_id) is None
    human = [r for r in reviews if (r["kind"] or "human_review") == "human_review"]
    model_alerts = [a for a in list_alerts(ctx.store, open_only=True, limit=500)
                    if a["body"].get("model") == row["model_key"]]
    logged = ctx.store.logged_at(f"decisions:{decision_id}")
    return report.with_record(
        decision={**report.decision, "logged_at": rfc3339(logged)},
        regimes=(report.regimes if report.regimes is not None
                 else list(served.card.regimes or DEFAULT_REGIMES)),
        report=report_meta,
        final_outcome=final_outcome(served, output, reviews),
        human_review={
            "status": human[-1]["status"] if human else "not_required",
            "history": [{"review_id": r["id"], "status": r["status"],
                         "reviewer": r["reviewer"], "reviewer_role": r["reviewer_role"],
                         "requested_at": rfc3339(r["requested_at"]),
                         "due_at": rfc3339(r["due_at"]),
                         "decided_at": rfc3339(r["decided_at"]),
                         "rationale": r["rationale"]} for r in human]},
        requests=[{"review_id": r["id"], "kind": r["kind"] or "human_review",
                   "channel": r["channel"], "received": rfc3339(r["requested_at"]),
                   "answered": rfc3339(r["decided_at"]), "outcome": r["status"]}
                  for r in reviews],
        access_log=[{"actor": a["actor"], "role": a["role"], "action": a["action"],
                     "purpose": a["purpose"], "at": rfc3339(a["at"])} for a in accesses],
        retention={"legal_bases": ctx.settings.retention_days(),
                   "retain_until": rfc3339(row["retain_until"]),
                   "legal_hold": bool(row["legal_hold"]), "erasure": {"erased": erased}},
        receipt=receipt.to_dict(),
        monitoring={"open_alerts": [
            {"kind": a["kind"], "title": a["body"].get("title"), "raised_at": a["raised_at"],
             "this_decision": decision_id in a["body"].get("decisions", [])}
            for a in model_alerts]})
