"""Decide: score one applicant, record the decision (its input committed to in the log, the
personal payload apart) and, by the policy, explain it now or leave a job for the pool."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from xai_sandbox.reports.report import REPORT_SCHEMA
from xai_sandbox.store.decisions import PreparedDecision
from xai_sandbox.workflows.context import Context
from xai_sandbox.workflows.explain import build_report
from xai_sandbox.workflows.scoring import score
from xai_sandbox.workflows.served import DecisionOutcome, ServedModel
from xai_sandbox.workflows.watch import watch

__all__ = ["Prepared", "decide", "prepare"]

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
    made = prepare(ctx, served, subject_id=subject_id, features=features, case_ref=case_ref,
                   explain_now=explain_now)
    # The decision and its report (or its job) in one transaction.
    stored = ctx.store.record_prepared(
        [made.prepared], reports=[made.report], jobs=[made.job],
        report_schema=REPORT_SCHEMA)[0]
    if made.report is not None:
        watch(ctx, served.key, stored.decision_id, made.report)
    return DecisionOutcome(decision_id=stored.decision_id,
                           case_ref=made.prepared.row["case_ref"], model_key=served.key,
                           output=made.output, leaf_index=stored.leaf_index,
                           explained=made.methods is not None, report_id=stored.report_id,
                           job_id=stored.job_id)


@dataclass(frozen=True)
class Prepared:
    """A decision made and explained, not yet written: its rows, its report (or the
    methods of the job that will explain it), what :meth:`Store.record_prepared` takes."""

    prepared: PreparedDecision
    output: dict[str, Any]
    methods: list[str] | None            # what explains it (None: the policy explains not)
    report: dict[str, Any] | None        # explained now
    job: list[str] | None                # left to the job pool


def prepare(ctx: Context, served: ServedModel, *, subject_id: str,
            features: Mapping[str, Any], case_ref: str | None = None,
            decision_id: str | None = None, explain_now: bool = True) -> Prepared:
    """Score one applicant and, by the policy, explain the decision, writing nothing (a
    batch worker prepares its rows so; the caller records them)."""
    _, output = score(served, features)
    decision_id = decision_id or str(uuid.uuid4())
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
            report = build_report(ctx, prepared.row, features, methods).to_dict()
        except Exception as exc:  # recorded with a job instead: retried, error kept
            # The type only: an error's message may quote the applicant's values.
            log.error("explaining decision %s failed (%s); queued as a job",
                      decision_id, type(exc).__name__)
    return Prepared(prepared=prepared, output=output, methods=methods, report=report,
                    job=None if report is not None else methods)
