"""The service's background work: the explanation job pool and the group commit of
access events."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

from xai_sandbox.reports.pipeline import Decider
from xai_sandbox.service import metrics
from xai_sandbox.store.store import Store

__all__ = ["AccessRecorder", "JobPool"]

log = logging.getLogger("xai_sandbox.service")


class JobPool:
    """Threads that claim explanation jobs from the database and run them.

    A worker renews its lease while it works, so a slow job is not taken over; a job whose
    worker died (or whose service was restarted) is claimed again once its lease runs out.
    """

    def __init__(self, decider: Decider, workers: int, idle_wait: float = 0.25) -> None:
        self.decider = decider
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
        queue_ = self.decider.jobs
        while not self._stop.is_set():
            try:
                job = queue_.claim()
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
                report_id = self.decider.run_job(job)
                metrics.JOBS.labels("done" if report_id else "failed_or_lost").inc()
            finally:
                renewing.set()
                beat.join()

    def _heartbeat(self, job: Any, done: threading.Event) -> None:
        period = self.decider.jobs.lease.total_seconds() / 3
        while not done.wait(period):
            try:
                if not self.decider.jobs.renew(job):
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
