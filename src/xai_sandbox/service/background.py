"""The service's background work: the explanation job pool, the group commit of access
events and the console's full verifications of the audit log."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import xai_sandbox.service.metrics as metrics
from xai_sandbox.errors import NotFoundError
from xai_sandbox.store import runs
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
        self._in_flight: dict[str, ClaimedJob] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        for n in range(self.workers):
            thread = threading.Thread(target=self._loop, name=f"xai-job-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> list[str]:
        """Stop claiming; wait up to ``timeout`` seconds for the jobs in flight to finish,
        and put the ones that did not back in the queue (another worker takes them at
        once, not after their lease). Returns the ids of the jobs put back."""
        self._stop.set()
        self._wake.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            unfinished = list(self._in_flight.values())
        released = []
        for job in unfinished:
            try:
                if self.jobs.release(job):
                    released.append(job.id)
            except Exception:  # the database is away: the job's lease runs out instead
                log.exception("putting job %s back failed", job.id)
        if released:
            log.warning("shutting down: %d job(s) put back in the queue", len(released))
        return released

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
            with self._lock:
                self._in_flight[job.id] = job
            try:
                report_id = self.run(job)
                metrics.JOBS.labels("done" if report_id else "failed_or_lost").inc()
            finally:
                with self._lock:
                    self._in_flight.pop(job.id, None)
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
    """Full verifications of the audit log run from the console, one at a time across
    every API process, in a thread; their progress (rows of ``verification_runs``) is
    polled by the page, from whichever process answers."""

    def __init__(self, store: Store, progress_every: float = 0.5) -> None:
        self.store = store
        self.progress_every = progress_every

    def start(self, actor: str) -> Verification:
        from xai_sandbox.store.verify import verify_log

        found, started = runs.start_run(self.store, actor)
        run = Verification(**found)
        if not started:
            return run
        store, last = self.store, [0.0]

        def progress(done: int, total: int) -> None:
            if time.monotonic() - last[0] >= self.progress_every or done == total:
                last[0] = time.monotonic()
                runs.report_progress(store, run.id, done, total)

        def work() -> None:
            started_at = time.perf_counter()
            try:
                report = verify_log(store.engine, store.log.verifiers(), store.log.origin,
                                    workers=1, progress=progress)
                result = {"entries": report.entries, "nodes": report.nodes,
                          "checkpoints": report.checkpoints, "problems": report.problems,
                          "seconds": round(time.perf_counter() - started_at, 2)}
                status = "passed" if report.ok else "failed"
            except Exception as exc:  # shown to the auditor, not raised
                result, status = {"problems": [f"{type(exc).__name__}: {exc}"]}, "error"
            runs.finish_run(store, run.id, status, result)

        threading.Thread(target=work, name="console-verify", daemon=True).start()
        return run

    def get(self, run_id: str) -> Verification:
        found = runs.get_run(self.store, run_id)
        if found is None:
            raise NotFoundError("verification", "must be a verification that was started",
                                run_id)
        return Verification(**found)
