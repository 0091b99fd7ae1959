"""The service's background work: the explanation job pool, the group commit of access
events and the console's full verifications of the audit log."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import xai_sandbox.service.metrics as metrics
from xai_sandbox.errors import NotFoundError
from xai_sandbox.store.entries import rfc3339
from xai_sandbox.store.jobs import ClaimedJob, JobQueue
from xai_sandbox.store.store import Store

__all__ = ["AccessRecorder", "JobPool", "Verification", "Verifications"]

log = logging.getLogger("xai_sandbox.service")


class JobPool:
    """Threads that claim explanation jobs from ``jobs`` and ``run`` them (``run`` returns
    the report id, or ``None`` when the job failed or was lost).

    A worker renews its lease while it works, so a slow job is not taken over; a job whose
    worker died (or whose service was restarted) is claimed again once its lease runs out.
    """

    def __init__(self, jobs: JobQueue, run: Callable[[ClaimedJob], str | None], workers: int,
                 idle_wait: float = 0.25) -> None:
        self.jobs = jobs
        self.run = run
        self.workers = workers
        self.idle_wait = idle_wait
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for n in range(self.workers):
            thread = threading.Thread(target=self._loop, name=f"xai-job-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                job = self.jobs.claim()
            except Exception:  # the database is away: try again later
                log.exception("claiming a job failed")
                job = None
            if job is None:
                self._wake.wait(self.idle_wait)
                self._wake.clear()
                continue
            renewing = threading.Event()
            beat = threading.Thread(target=self._heartbeat, args=(job, renewing), daemon=True)
            beat.start()
            try:
                report_id = self.run(job)
                metrics.JOBS.labels("done" if report_id else "failed_or_lost").inc()
            finally:
                renewing.set()
                beat.join()

    def _heartbeat(self, job: ClaimedJob, done: threading.Event) -> None:
        period = self.jobs.lease.total_seconds() / 3
        while not done.wait(period):
            try:
                if not self.jobs.renew(job):
                    return
            except Exception:
                log.exception("renewing a job lease failed")


class AccessRecorder:
    """Group commit of access events: many readers, one transaction per batch.

    :meth:`record` returns only once the event is durably in the log, so a report is
    never served without its access event; the batch shares one fsync.
    """

    def __init__(self, store: Store, max_batch: int = 512) -> None:
        self.store = store
        self.max_batch = max_batch
        self._queue: queue.Queue[tuple[Mapping[str, Any], Future[int]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="xai-access", daemon=True)
        self._thread.start()

    def record(self, **event: Any) -> int:
        future: Future[int] = Future()
        self._queue.put((event, future))
        return future.result(timeout=60)

    async def record_async(self, **event: Any) -> int:
        """:meth:`record` for the event loop: waits for the commit without a thread."""
        future: Future[int] = Future()
        self._queue.put((event, future))
        return await asyncio.wrap_future(future)

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(10)

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            try:
                leaves = self.store.record_accesses([e for e, _ in batch])
            except Exception as exc:  # every waiting reader gets the failure
                for _, future in batch:
                    future.set_exception(exc)
            else:
                metrics.ACCESS_EVENTS.inc(len(batch))
                for (_, future), leaf in zip(batch, leaves, strict=True):
                    future.set_result(leaf)
            if stop:
                return


@dataclass
class Verification:
    id: str
    started_by: str
    started_at: str
    done: int = 0
    total: int = 0
    status: str = "running"   # running, passed, failed, error
    result: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "done": self.done,
                "total": self.total, "started_by": self.started_by,
                "started_at": self.started_at, "entries": 0, "nodes": 0, "checkpoints": 0,
                "seconds": None, "problems": [], **self.result}


class Verifications:
    """Full verifications of the audit log run from the console, one at a time, in a
    thread; their progress is polled by the page."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[str, Verification] = {}

    def start(self, store: Store, actor: str) -> Verification:
        from xai_sandbox.store.verify import verify_log

        with self._lock:
            running = [v for v in self._runs.values() if v.status == "running"]
            if running:
                return running[0]
            run = Verification(str(uuid.uuid4()), actor, rfc3339(datetime.now(UTC)) or "")
            self._runs = {**dict(list(self._runs.items())[-9:]), run.id: run}

        def progress(done: int, total: int) -> None:
            run.done, run.total = done, total

        def work() -> None:
            started = time.perf_counter()
            try:
                report = verify_log(store.engine, store.log.verifiers(), store.log.origin,
                                    workers=1, progress=progress)
                run.result = {"entries": report.entries, "nodes": report.nodes,
                              "checkpoints": report.checkpoints,
                              "problems": report.problems,
                              "seconds": round(time.perf_counter() - started, 2)}
                run.status = "passed" if report.ok else "failed"
            except Exception as exc:  # shown to the auditor, not raised
                run.result = {"problems": [f"{type(exc).__name__}: {exc}"]}
                run.status = "error"

        threading.Thread(target=work, name="console-verify", daemon=True).start()
        return run

    def get(self, run_id: str) -> Verification:
        with self._lock:
            found = self._runs.get(run_id)
        if found is None:
            raise NotFoundError("verification", "must be a verification started here",
                                run_id)
        return found
