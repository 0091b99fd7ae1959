"""Explanation jobs (staff roles)."""

from __future__ import annotations

import json

from fastapi import Request

from xai_sandbox.service.deps import RT, STAFF, Uuid, Who, base_url, require
from xai_sandbox.service.schemas import Job
from xai_sandbox.service.strict import resource_router
from xai_sandbox.store.entries import rfc3339

router = resource_router("decisions")


@router.get("/v1/jobs/{job_id}")
def job(job_id: Uuid, request: Request, rt: RT, who: Who) -> Job:
    """An explanation job: queued, running, done (with its report) or failed."""
    require(who, *STAFF)
    row = rt.decider.jobs.get(job_id)
    base = base_url(request)
    return Job(job_id=row["id"], decision_id=row["decision_id"], status=row["status"],
               methods=json.loads(row["methods_json"]), attempts=row["attempts"],
               created_at=rfc3339(row["created_at"]), finished_at=rfc3339(row["finished_at"]),
               error=row["error"],
               report_url=f"{base}/v1/decisions/{row['decision_id']}/report"
               if row["status"] == "done" else None)
