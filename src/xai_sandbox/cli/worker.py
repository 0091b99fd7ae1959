"""``xai-sandbox worker``: a process that runs explanation jobs and webhook deliveries and
serves no HTTP (the job workers of a deployment; its API processes run with
``XAI_SANDBOX_JOB_WORKERS=0``)."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Annotated

import typer

from xai_sandbox.cli.common import app, console


@app.command()
def worker(
    threads: Annotated[int | None, typer.Option(
        min=1, max=32, help="job threads (default: XAI_SANDBOX_JOB_WORKERS, at least 1)")
                       ] = None,
) -> None:
    """Claim and run explanation jobs (leases taken with FOR UPDATE SKIP LOCKED on
    PostgreSQL) and deliver webhooks, until SIGTERM or SIGINT; then finish the jobs in
    flight for up to XAI_SANDBOX_JOB_DRAIN_SECONDS and put the rest back in the queue."""
    from xai_sandbox.service.deps import Runtime
    from xai_sandbox.settings import Settings

    settings = Settings()
    count = threads or max(1, settings.job_workers)
    settings = settings.model_copy(update={"job_workers": count})
    stop = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    rt = Runtime.open(settings, job_workers=True)
    rt.start(webhooks=True)
    where = rt.store.engine.url.render_as_string(hide_password=True)
    console.print(f"worker: {count} job thread(s) on {where}")
    try:
        stop.wait()
    finally:
        console.print("worker: stopping (finishing the jobs in flight)")
        rt.close()
        console.print("worker: stopped")
