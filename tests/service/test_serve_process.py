"""``xai-sandbox serve`` and ``xai-sandbox users`` as a user runs them: real processes,
killed without warning in the middle of a job."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from liveserver import free_port
from xai_sandbox.demos.credit import credit_models

CLI = [sys.executable, "-m", "xai_sandbox.cli"]
ROWS = credit_models().data.rows


def _env(data_dir: Path) -> dict[str, str]:
    return {**os.environ, "XAI_SANDBOX_DATA_DIR": str(data_dir),
            "XAI_SANDBOX_JOB_LEASE_SECONDS": "2"}


def _serve(data_dir: Path, port: int, *extra: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([*CLI, "serve", "--port", str(port), "--log-level", "warning",
                             *extra], env=_env(data_dir), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.stdout.read() if proc.stdout else "server exited")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("server did not start")


def _stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> None:
    proc.send_signal(sig)
    proc.wait(30)
    if proc.stdout is not None:
        proc.stdout.close()


def test_users_cli_creates_principals_whose_keys_work(tmp_path):
    made = subprocess.run([*CLI, "users", "create", "olga", "--role", "operator"],
                          env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"xai_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", key)
    bad = subprocess.run([*CLI, "users", "create", "sam", "--role", "subject"],
                         env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "subject_id" in bad.stdout
    listed = subprocess.run([*CLI, "users", "list"], env=_env(tmp_path), capture_output=True,
                            text=True, timeout=120)
    assert "olga" in listed.stdout and "operator" in listed.stdout
    proc, url = _serve(tmp_path, free_port())
    try:
        ok = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200 and ok.json() == []
    finally:
        _stop(proc)


def test_serve_demo_then_killed_mid_job_loses_nothing(tmp_path):
    port = free_port()
    proc, url = _serve(tmp_path, port, "--demo")
    try:
        assert proc.stdout is not None
        out = ""
        while "API documentation" not in out:
            out += proc.stdout.readline()
        keys = dict(re.findall(r"^\s+(\S+)\s+(xai_\S+)$", out, re.M))
        assert set(keys) >= {"olivia-operator", "rita-reviewer", "carl-compliance",
                             "aude-auditor", "adam-admin", "alice", "bob"}
        operator = {"Authorization": f"Bearer {keys['olivia-operator']}"}
        alice = {"Authorization": f"Bearer {keys['alice']}"}
        mine = httpx.get(f"{url}/v1/decisions", headers=alice).json()
        assert len(mine) == 1
        posted = [httpx.post(f"{url}/v1/decisions", headers=operator, timeout=60, json={
            "model_id": "credit-mlp", "subject_id": f"k-{i}", "features": ROWS[i]})
            for i in range(4)]
        assert {p.status_code for p in posted} == {202}
        # Kill the server while it works the queue: no shutdown, no cleanup.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            states = {httpx.get(p.json()["explanation"]["job_url"], headers=operator
                                ).json()["status"] for p in posted}
            if "running" in states or "done" in states:
                break
            time.sleep(0.05)
    finally:
        _stop(proc, signal.SIGKILL)
    port2 = free_port()
    proc, url = _serve(tmp_path, port2)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            jobs = [httpx.get(f"{url}/v1/jobs/{p.json()['explanation']['job_id']}",
                              headers=operator).json() for p in posted]
            if all(j["status"] == "done" for j in jobs):
                break
            time.sleep(0.2)
        assert [j["status"] for j in jobs] == ["done"] * 4, jobs
        auditor = {"Authorization": f"Bearer {keys['aude-auditor']}"}
        size = httpx.get(f"{url}/health").json()["log_size"]
        entries = []
        for start in range(0, size, 1000):
            entries += httpx.get(f"{url}/v1/audit/entries", headers=auditor,
                                 params={"start": start}).json()["entries"]
        for p in posted:
            reports = [e for e in entries if e["kind"] == "explanation_generated"
                       and e["body"]["decision_id"] == p.json()["decision_id"]]
            assert len(reports) == 1
    finally:
        _stop(proc)
    verified = subprocess.run([*CLI, "audit", "verify"], env=_env(tmp_path),
                              capture_output=True, text=True, timeout=300)
    assert verified.returncode == 0, verified.stdout + verified.stderr
