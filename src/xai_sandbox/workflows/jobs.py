"""Run a job: explain a claimed job's decision, store its report and complete the job."""

from __future__ import annotations

from xai_sandbox.reports.report import REPORT_SCHEMA
from xai_sandbox.store.jobs import ClaimedJob, JobLostError
from xai_sandbox.workflows.context import Context
from xai_sandbox.workflows.explain import explain_decision
from xai_sandbox.workflows.watch import watch

__all__ = ["run_job"]


def run_job(ctx: Context, job: ClaimedJob) -> str | None:
    """Explain a claimed job's decision and complete the job; returns the report id
    (``None`` if the job failed or was lost to another worker)."""
    try:
        report = explain_decision(ctx, job.decision_id, job.methods)
    except Exception as exc:  # recorded on the job; retried or failed by the queue
        ctx.jobs.fail(job, f"{type(exc).__name__}: {exc}")
        return None
    try:
        report_id, _ = ctx.jobs.complete(job, report.to_dict(), REPORT_SCHEMA)
    except JobLostError:
        return None
    watch(ctx, ctx.store.decision(job.decision_id)["model_key"], job.decision_id, report)
    return report_id
