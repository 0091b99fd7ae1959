"""Decide: score one applicant, record the decision (its input committed to in the log, the
personal payload apart) and, by the policy, explain it now or leave a job for the pool."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from xai_sandbox.reports.report import REPORT_SCHEMA
from xai_sandbox.workflows.context import Context
from xai_sandbox.workflows.explain import build_report
from xai_sandbox.workflows.scoring import score
from xai_sandbox.workflows.served import DecisionOutcome
from xai_sandbox.workflows.watch import watch

__all__ = ["decide"]

log = logging.getLogger("xai_sandbox.reports")


def decide(ctx: Context, *, model_id: str, subject_id: str, features: Mapping[str, Any],
           version: str | None = None, case_ref: str | None = None,
           explain_now: bool = True) -> DecisionOutcome:
    """Score, record and (by policy) explain one decision.

    The decision and its explanation job are recorded in one transaction. Cheap
    methods are run at once by the caller (``explain_now``); expensive ones are left
    to the job pool.
    """
    served = ctx.model(model_id, version)
    _, output = score(served, features)
    decision_id = str(uuid.uuid4())
    prepared = ctx.store.prepare_decision({
        "decision_id": decision_id, "model_key": served.key, "subject_id": subject_id,
        "inputs": dict(features), "output": output,
        "policy_version": served.policy.version, "case_ref": case_ref})
    explains = served.policy.explains(adverse=bool(output["adverse"]),
                                      confidence=float(output["confidence"]),
                                      decision_id=decision_id)
    methods = list(served.policy.methods) if explains else None
    report = None
    if methods and explain_now and not served.policy.deferred:
        try:
            report = build_report(ctx, prepared.row, features, methods)
        except Exception as exc:  # recorded with a job instead: retried, error kept
            # The type only: an error's message may quote the applicant's values.
            log.error("explaining decision %s failed (%s); queued as a job",
                      decision_id, type(exc).__name__)
    # The decision and its report (or its job) in one transaction.
    stored = ctx.store.record_prepared(
        [prepared], reports=[report.to_dict() if report is not None else None],
        jobs=[None if report is not None else methods], report_schema=REPORT_SCHEMA)[0]
    if report is not None:
        watch(ctx, served.key, decision_id, report)
    return DecisionOutcome(decision_id=stored.decision_id,
                           case_ref=prepared.row["case_ref"], model_key=served.key,
                           output=output, leaf_index=stored.leaf_index,
                           explained=methods is not None, report_id=stored.report_id,
                           job_id=stored.job_id)
