"""Explanation jobs kept in the database.

A job is created in the same transaction as its decision, so an acknowledged decision
never loses its explanation. A worker claims a job with a fresh token and a lease that it
renews while it works; a job whose lease ran out (its worker died, or the service was
restarted) is claimed again. Only the holder of the current token can complete a job, and
completion writes the report in the same transaction, so a job completes once.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, insert, or_, select, update

import xai_sandbox.store.tables as t
from xai_sandbox.errors import NotFoundError
from xai_sandbox.store.reports import ReportRecords

__all__ = ["ClaimedJob", "JobLostError", "JobQueue"]

JOB_STATES = ("queued", "running", "done", "failed")


class JobLostError(RuntimeError):
    """The job's lease passed to another worker; this worker's result is dropped."""


@dataclass(frozen=True)
class ClaimedJob:
    id: str
    decision_id: str
    methods: tuple[str, ...]
    token: str
    attempts: int


def _now() -> datetime:
    return datetime.now(UTC)


def enqueue(conn: Connection, decision_id: str, methods: Sequence[str]) -> str:
    job_id = str(uuid.uuid4())
    conn.execute(insert(t.jobs).values(
        id=job_id, decision_id=decision_id, status="queued",
        methods_json=json.dumps(list(methods)), attempts=0, created_at=_now()))
    return job_id


class JobQueue:
    """Claim, renew, complete and fail jobs of one store (a
    :class:`~xai_sandbox.store.Store`: what a job needs of it is writing its report)."""

    def __init__(self, store: ReportRecords, *, lease_seconds: float = 30.0, max_attempts: int = 3
                 ) -> None:
        self.store = store
        self.lease = timedelta(seconds=lease_seconds)
        self.max_attempts = max_attempts

    def get(self, job_id: str) -> dict[str, Any]:
        with self.store.engine.connect() as conn:
            row = conn.execute(select(t.jobs).where(t.jobs.c.id == job_id)).mappings().first()
        if row is None:
            raise NotFoundError("job_id", "must be an existing job", job_id)
        return dict(row)

    def counts(self) -> dict[str, int]:
        with self.store.engine.connect() as conn:
            rows = conn.execute(select(t.jobs.c.status, func.count())
                                .group_by(t.jobs.c.status)).all()
        found = {str(s): int(n) for s, n in rows}
        return {s: found.get(s, 0) for s in JOB_STATES}

    def claim(self, job_id: str | None = None) -> ClaimedJob | None:
        """The oldest claimable job (or job ``job_id`` if claimable), now held by the
        caller, or ``None``."""
        now = _now()
        claimable = or_(t.jobs.c.status == "queued",
                        (t.jobs.c.status == "running") & (t.jobs.c.lease_until < now))
        with self.store.writer.begin() as conn:
            query = (select(t.jobs.c.id, t.jobs.c.decision_id, t.jobs.c.methods_json,
                            t.jobs.c.attempts)
                     .where(claimable).order_by(t.jobs.c.created_at).limit(1))
            if job_id is not None:
                query = query.where(t.jobs.c.id == job_id)
            if conn.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            row = conn.execute(query).first()
            if row is None:
                return None
            token = str(uuid.uuid4())
            done = conn.execute(update(t.jobs).where(t.jobs.c.id == row.id, claimable).values(
                status="running", token=token, lease_until=now + self.lease,
                attempts=row.attempts + 1))
            if done.rowcount != 1:  # pragma: no cover - another worker won the row
                return None
        return ClaimedJob(row.id, row.decision_id, tuple(json.loads(row.methods_json)), token,
                          row.attempts + 1)

    def renew(self, job: ClaimedJob) -> bool:
        """Extend the lease; ``False`` if the job is no longer this worker's."""
        with self.store.writer.begin() as conn:
            done = conn.execute(update(t.jobs).where(
                t.jobs.c.id == job.id, t.jobs.c.token == job.token,
                t.jobs.c.status == "running").values(lease_until=_now() + self.lease))
        return done.rowcount == 1

    def complete(self, job: ClaimedJob, report: Mapping[str, Any], schema_version: str
                 ) -> tuple[str, int]:
        """Store the job's report and mark it done, in one transaction; returns (report
        id, leaf). Raises :class:`JobLostError` if the token is no longer current."""
        with self.store.writer.begin() as conn:
            done = conn.execute(update(t.jobs).where(
                t.jobs.c.id == job.id, t.jobs.c.token == job.token,
                t.jobs.c.status == "running").values(status="done", finished_at=_now(),
                                                     token=None, lease_until=None))
            if done.rowcount != 1:
                raise JobLostError(job.id)
            report_id, leaf = self.store.insert_report(conn, job.decision_id, report,
                                                       schema_version)
            conn.execute(update(t.jobs).where(t.jobs.c.id == job.id).values(
                report_id=report_id))
        return report_id, leaf

    def release(self, job: ClaimedJob) -> bool:
        """Put a job this worker holds back in the queue (a shutdown, not a failure: the
        attempt is not counted); ``False`` if it is no longer this worker's."""
        with self.store.writer.begin() as conn:
            done = conn.execute(update(t.jobs).where(
                t.jobs.c.id == job.id, t.jobs.c.token == job.token,
                t.jobs.c.status == "running").values(
                status="queued", token=None, lease_until=None, attempts=job.attempts - 1))
        return done.rowcount == 1

    def fail(self, job: ClaimedJob, error: str) -> str:
        """Record a failure: queued again while attempts remain, else failed."""
        status = "queued" if job.attempts < self.max_attempts else "failed"
        with self.store.writer.begin() as conn:
            conn.execute(update(t.jobs).where(
                t.jobs.c.id == job.id, t.jobs.c.token == job.token).values(
                status=status, token=None, lease_until=None, error=error[:2000],
                finished_at=_now() if status == "failed" else None))
        return status
