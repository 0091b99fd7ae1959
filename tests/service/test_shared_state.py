"""Several API processes on one PostgreSQL, as a deployment runs them: the migrations run
once when two start together, the rate limits hold across them, a verification run and a
webhook delivery are shared (one run, one post), and a job worker stopped with SIGTERM
puts the job it could not finish back in the queue."""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from sqlalchemy import select, text, update

from liveserver import free_port
from xai_sandbox.monitor.alerts import WebhookDispatcher, parse_webhooks, raise_alert
from xai_sandbox.service.background import JobPool, Verifications
from xai_sandbox.service.demo import DEMO_MODELS, setup_demo
from xai_sandbox.service.schemas import GERMAN_CREDIT_EXAMPLE
from xai_sandbox.settings import Settings
from xai_sandbox.store import Store
from xai_sandbox.store import tables as t
from xai_sandbox.store.buckets import SharedBuckets
from xai_sandbox.store.jobs import enqueue
from xai_sandbox.workflows import Decider

CLI = [sys.executable, "-m", "xai_sandbox.cli"]


def _env(data_dir: Path, url: str, **extra: str) -> dict[str, str]:
    env = {**os.environ, "XAI_SANDBOX_DATA_DIR": str(data_dir),
           "XAI_SANDBOX_DATABASE_URL": url, "XAI_SANDBOX_LOG_ORIGIN": "test.example/shared"}
    env.update({f"XAI_SANDBOX_{k.upper()}": v for k, v in extra.items()})
    return env


def _serve(env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    proc = subprocess.Popen([*CLI, "serve", "--port", str(port), "--log-level", "warning"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    return proc, f"http://127.0.0.1:{port}"


def _ready(proc: subprocess.Popen[str], url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.stdout.read() if proc.stdout else "server exited")
        try:
            if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("server not ready")


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    return out


def test_two_api_processes_starting_together_migrate_once(tmp_path: Path, postgres) -> None:
    url = postgres.new_database()
    env = _env(tmp_path, url, job_workers="0")
    servers = [_serve(env), _serve(env)]  # both on an empty database, at once
    try:
        for proc, base in servers:
            _ready(proc, base)
            assert httpx.get(f"{base}/health/live").json() == {"status": "ok",
                                                               "reason": None}
    finally:
        outs = [_stop(proc) for proc, _ in servers]
    assert all("Error" not in out for out in outs), outs
    store = Store(Settings(data_dir=tmp_path, database_url=url))
    try:
        with store.engine.connect() as conn:
            versions = conn.execute(text("SELECT version_num FROM alembic_version")).all()
    finally:
        store.close()
    assert [v[0] for v in versions] == ["0007"]


def test_the_subject_rate_limit_holds_across_two_api_processes(tmp_path: Path,
                                                               postgres) -> None:
    url = postgres.new_database()
    store = Store(Settings(data_dir=tmp_path, database_url=url))
    try:
        made = setup_demo(store)
    finally:
        store.close()
    env = _env(tmp_path, url, job_workers="0", rate_limit_subject_per_minute="6")
    servers = [_serve(env), _serve(env)]
    try:
        for proc, base in servers:
            _ready(proc, base)
        auth = {"Authorization": f"Bearer {made['keys']['alice']}"}
        path = f"/v1/decisions/{made['decisions']['alice']}"
        answers = [httpx.get(servers[n % 2][1] + path, headers=auth, timeout=60)
                   for n in range(12)]
    finally:
        for proc, _ in servers:
            _stop(proc)
    codes = [a.status_code for a in answers]
    # Six in the bucket (plus a refill or two on a slow machine), not six per process.
    assert 6 <= codes.count(200) <= 8, codes
    assert codes[:6] == [200] * 6
    refused = [a for a in answers if a.status_code == 429]
    assert refused and all(int(a.headers["retry-after"]) >= 1 for a in refused)


def test_a_model_registered_through_one_process_is_served_by_the_other(
        tmp_path: Path, postgres) -> None:
    url = postgres.new_database()
    store = Store(Settings(data_dir=tmp_path, database_url=url))
    try:
        made = setup_demo(store)
    finally:
        store.close()
    env = _env(tmp_path, url, job_workers="0")
    servers = [_serve(env), _serve(env)]
    operator = {"Authorization": f"Bearer {made['keys']['olivia-operator']}"}
    try:
        for proc, base in servers:
            _ready(proc, base)
        spec = {**DEMO_MODELS[0], "model_id": "credit-new", "version": "7"}
        made_here = httpx.post(f"{servers[0][1]}/v1/models", json=spec, headers=operator,
                               timeout=120)
        decided = httpx.post(f"{servers[1][1]}/v1/decisions", headers=operator, timeout=120,
                             json={"model_id": "credit-new", "subject_id": "applicant-bob",
                                   "features": GERMAN_CREDIT_EXAMPLE})
        listed = httpx.get(f"{servers[1][1]}/v1/models", headers=operator, timeout=60)
    finally:
        for proc, _ in servers:
            _stop(proc)
    assert made_here.status_code == 201, made_here.text
    assert decided.status_code == 201, decided.text
    assert decided.json()["model"] == "credit-new@7"
    assert "credit-new" in {m["model_id"] for m in listed.json()}


def test_shared_buckets_never_give_out_more_than_the_capacity(tmp_path: Path,
                                                              postgres) -> None:
    url = postgres.new_database()
    stores = [Store(Settings(data_dir=tmp_path, database_url=url)) for _ in range(2)]
    try:
        buckets = [SharedBuckets(s, per_minute=20, scope="subject") for s in stores]
        waits: list[float] = []
        lock = threading.Lock()

        def take(bucket: SharedBuckets) -> None:
            for _ in range(15):
                wait = bucket.take("one subject")
                with lock:
                    waits.append(wait)

        threads = [threading.Thread(target=take, args=(b,)) for b in buckets * 2]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        other = buckets[0].take("another subject")
        with stores[0].engine.connect() as conn:
            names = conn.execute(select(t.rate_buckets.c.key_sha256)).scalars().all()
    finally:
        for s in stores:
            s.close()
    assert len(waits) == 60
    # 60 takes at once on two engines draw on one bucket of 20 (a token refills every 3 s),
    # not on a bucket per engine (40).
    assert 20 <= waits.count(0.0) <= 22
    assert other == 0.0
    assert len(names) == 2 and all(len(n) == 64 and "subject" not in n for n in names)


def test_one_verification_run_is_seen_by_every_process(tmp_path: Path, postgres) -> None:
    url = postgres.new_database()
    stores = [Store(Settings(data_dir=tmp_path, database_url=url)) for _ in range(2)]
    try:
        setup_demo(stores[0])
        first, second = Verifications(stores[0]), Verifications(stores[1])
        run = first.start("ada-auditor")
        again = second.start("adam-auditor")  # a second process: the same run
        assert again.id == run.id and again.started_by == "ada-auditor"
        deadline = time.monotonic() + 120
        seen = second.get(run.id)
        while seen.status == "running" and time.monotonic() < deadline:
            time.sleep(0.1)
            seen = second.get(run.id)
        entries = stores[1].log.size()
    finally:
        for s in stores:
            s.close()
    assert seen.status == "passed", seen
    assert seen.done == seen.total > 0 and seen.result["entries"] == entries
    assert seen.result["problems"] == []


class _Receiver(http.server.BaseHTTPRequestHandler):
    posts: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).posts.append(self.headers["X-XAI-Alert-Id"])
        time.sleep(0.2)  # a slow receiver: the other dispatcher runs meanwhile
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_each_webhook_is_posted_by_one_dispatcher_of_two(tmp_path: Path, postgres) -> None:
    _Receiver.posts = []
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    url = postgres.new_database()
    hook = f"generic=http://127.0.0.1:{receiver.server_address[1]}/hook"
    stores = [Store(Settings(data_dir=tmp_path, database_url=url, webhooks=hook))
              for _ in range(2)]
    try:
        ids = [raise_alert(stores[0], "drift", {"title": f"drift {n}"},
                           dedup_key=f"drift:{n}", webhooks=parse_webhooks(hook))
               for n in range(6)]
        dispatchers = [WebhookDispatcher(s, poll=0.05) for s in stores]
        rounds = [threading.Thread(target=d.deliver_due) for d in dispatchers * 3]
        for th in rounds:
            th.start()
        for th in rounds:
            th.join()
        with stores[0].engine.connect() as conn:
            states = conn.execute(select(t.alert_deliveries.c.status,
                                         t.alert_deliveries.c.attempts)).all()
    finally:
        for s in stores:
            s.close()
        receiver.shutdown()
        receiver.server_close()
    assert sorted(_Receiver.posts) == sorted(ids)  # each alert once, none twice
    assert sorted(states) == [("delivered", 1)] * 6


def test_a_worker_stopped_mid_job_puts_it_back_for_another(tmp_path: Path,
                                                           postgres) -> None:
    url = postgres.new_database()
    settings = Settings(data_dir=tmp_path, database_url=url, job_lease_seconds=300.0)
    store = Store(settings)
    try:
        setup_demo(store)
        decider = Decider(store)
        started, release = threading.Event(), threading.Event()

        def slow(job: Any) -> str | None:
            started.set()
            release.wait(30)
            return None

        decision_id = _a_decision(store)
        with store.writer.begin() as conn:
            job_id = enqueue(conn, decision_id, ["tree_shap"])
        pool = JobPool(decider.jobs, slow, workers=1, idle_wait=0.05)
        pool.start()
        assert started.wait(30)
        put_back = pool.stop(timeout=0.2)  # SIGTERM's drain ran out
        release.set()
        row = decider.jobs.get(job_id)
        again = decider.jobs.claim()  # the next worker takes it at once, not in 300 s
    finally:
        store.close()
    assert put_back == [job_id]
    assert row["status"] == "queued" and row["attempts"] == 0 and row["token"] is None
    assert again is not None and again.id == job_id and again.attempts == 1


def _a_decision(store: Store) -> str:
    with store.engine.connect() as conn:
        decision_id = conn.execute(select(t.decisions.c.id).limit(1)).scalar_one()
    with store.writer.begin() as conn:  # the demo's jobs count as done: one job is queued
        conn.execute(update(t.jobs).values(status="done"))
    return str(decision_id)


def postgres_password_hidden(line: str, url: str) -> bool:
    password = url.split("://", 1)[1].split("@")[0].partition(":")[2]
    return not password or password not in line


def test_the_worker_command_drains_on_sigterm(tmp_path: Path, postgres) -> None:
    url = postgres.new_database()
    env = _env(tmp_path, url, job_drain_seconds="5")
    proc = subprocess.Popen([*CLI, "worker", "--threads", "2"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    deadline = time.monotonic() + 120
    while "job thread" not in line and time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(proc.stdout.read())
        line = proc.stdout.readline()
    assert "2 job thread(s)" in line
    assert postgres_password_hidden(line, url)
    out = _stop(proc)
    assert proc.returncode == 0, out
    assert "stopped" in out
