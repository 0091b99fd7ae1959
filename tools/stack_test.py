"""The smoke and kill paths through a running compose stack (``tools/image-test.sh``).

Smoke: register the German credit model, post decisions, read a subject view in English
and Chinese (from the other API process), read a report PDF, request a review, verify the
audit log in a container and one receipt here, offline. Kill: post a load of decisions
whose explanations run as jobs, SIGKILL one API container and one job worker in the
middle, restart them, and check that every acknowledged decision and job is stored
exactly once, every job is done, and the log verifies.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from typing import Any

import httpx

from xai_sandbox.audit.log import Receipt, check_receipt
from xai_sandbox.audit.notes import parse_verifier
from xai_sandbox.service.demo import CREDIT_LABELS, DEMO_MODELS
from xai_sandbox.service.schemas import GERMAN_CREDIT_EXAMPLE


class Stack:
    def __init__(self, project: str, urls: list[str]) -> None:
        self.project, self.urls = project, urls

    def container(self, service: str) -> str:
        return f"{self.project}_{service}_1"

    def podman(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=300)
        if check and done.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)}: {done.stdout}{done.stderr}")
        return done.stdout

    def cli(self, *args: str) -> str:
        return self.podman("exec", self.container("api-1"), "xai-sandbox", *args)

    def sql(self, query: str) -> list[list[str]]:
        out = self.podman("exec", self.container("db"), "psql", "-h", "/tmp", "-U",
                          "postgres", "-d", "xai_sandbox", "-At", "-F", "\t", "-c", query)
        return [line.split("\t") for line in out.splitlines() if line]

    def ready(self, url: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"{url} not ready in {timeout} s")


def key(stack: Stack, name: str, *options: str) -> str:
    return stack.cli("users", "create", name, *options).strip().splitlines()[-1]


def smoke(stack: Stack) -> dict[str, str]:
    one, two = stack.urls
    keys = {"operator": key(stack, "olga", "--role", "operator"),
            "compliance": key(stack, "carla", "--role", "compliance_officer"),
            "reviewer": key(stack, "rita", "--role", "reviewer"),
            "alice": key(stack, "alice", "--role", "subject", "--subject-id", "applicant-a")}
    auth = {n: {"Authorization": f"Bearer {k}"} for n, k in keys.items()}
    for spec in (DEMO_MODELS[0], {**DEMO_MODELS[0], "model_id": "credit-jobs",
                                  "policy": {**DEMO_MODELS[0]["policy"], "run_as_job": True}}):
        r = httpx.post(f"{one}/v1/models", json=spec, headers=auth["operator"], timeout=120)
        assert r.status_code == 201, r.text
    decided = httpx.post(f"{one}/v1/decisions", headers=auth["operator"], timeout=120, json={
        "model_id": "credit", "subject_id": "applicant-a", "features": GERMAN_CREDIT_EXAMPLE})
    assert decided.status_code == 201, decided.text
    decision = decided.json()
    outcome = decision["output"]["decision"]
    views = {lang: httpx.get(f"{two}/v1/decisions/{decision['decision_id']}",
                             params={"lang": lang}, headers=auth["alice"], timeout=60)
             for lang in ("en", "zh")}
    for lang, view in views.items():
        assert view.status_code == 200, view.text
        shown = json.dumps(view.json(), ensure_ascii=False)
        assert CREDIT_LABELS[outcome][lang] in shown, (lang, outcome, shown[:300])
    pdf = httpx.get(f"{two}/v1/decisions/{decision['decision_id']}/report.pdf",
                    headers=auth["compliance"], timeout=120)
    assert pdf.status_code == 200, pdf.text
    assert pdf.content.startswith(b"%PDF")
    review = httpx.post(f"{one}/v1/decisions/{decision['decision_id']}/reviews",
                        json={"reason": "My savings changed"}, headers=auth["alice"],
                        timeout=60)
    assert review.status_code == 201, review.text
    queue = httpx.get(f"{two}/v1/reviews", headers=auth["reviewer"], timeout=60).json()
    assert decision["decision_id"] in json.dumps(queue)
    verifier = parse_verifier(stack.cli("audit", "pubkey").strip())
    entry = check_receipt(Receipt.from_dict(decision["receipt"]), [verifier])
    assert entry["decision_id"] == decision["decision_id"], entry
    stack.cli("audit", "verify")
    print(f"smoke: decision {decision['decision_id']} ({outcome}), subject view en+zh, "
          f"PDF {len(pdf.content) // 1024} KiB, review requested, log and receipt verify")
    return keys


def kill(stack: Stack, keys: dict[str, str], total: int = 80) -> None:
    auth = {"Authorization": f"Bearer {keys['operator']}"}
    acknowledged: list[dict[str, Any]] = []
    refused = [0]
    lock = threading.Lock()

    def post(n: int) -> None:
        features = {**GERMAN_CREDIT_EXAMPLE, "duration": 6 + n % 60,
                    "credit_amount": 500 + 97 * n}
        url = stack.urls[n % 2]
        try:
            r = httpx.post(f"{url}/v1/decisions", headers=auth, timeout=60, json={
                "model_id": "credit-jobs", "subject_id": f"load-{n}", "features": features})
        except httpx.TransportError:
            with lock:
                refused[0] += 1
            return
        with lock:
            if r.status_code in (201, 202):
                acknowledged.append(r.json())
            else:
                refused[0] += 1

    threads = []
    for n in range(total):
        if n == total // 3:  # in the middle of the load
            stack.podman("kill", "--signal", "KILL", stack.container("api-2"))
            stack.podman("kill", "--signal", "KILL", stack.container("worker-1"))
        th = threading.Thread(target=post, args=(n,))
        th.start()
        threads.append(th)
        if len(threads) >= 4:
            threads.pop(0).join()
    for th in threads:
        th.join()
    stack.podman("start", stack.container("api-2"))
    stack.podman("start", stack.container("worker-1"))
    stack.ready(stack.urls[1])
    ids = [a["decision_id"] for a in acknowledged]
    jobs = [a["explanation"]["job_id"] for a in acknowledged if a["explanation"]["job_id"]]
    assert len(ids) == len(set(ids)), ids
    assert len(jobs) == len(ids), (len(ids), len(jobs))
    deadline = time.monotonic() + 300
    while True:
        states = dict(stack.sql("SELECT status, count(*) FROM jobs WHERE id IN ("
                                + ",".join(f"'{j}'" for j in jobs) + ") GROUP BY status"))
        if states.get("done") == str(len(jobs)) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert states == {"done": str(len(jobs))}, states
    quoted = ",".join(f"'{d}'" for d in ids)
    stored = stack.sql(f"SELECT count(*), count(DISTINCT id) FROM decisions WHERE id IN "
                       f"({quoted})")
    assert stored == [[str(len(ids)), str(len(ids))]], stored
    reports = stack.sql(f"SELECT decision_id, count(*) FROM reports WHERE decision_id IN "
                        f"({quoted}) GROUP BY decision_id")
    assert len(reports) == len(ids), reports
    assert all(n == "1" for _, n in reports), reports
    stack.cli("audit", "verify")
    print(f"kill: {len(ids)} acknowledged decisions and jobs, each stored once and done "
          f"after api-2 and worker-1 were killed ({refused[0]} requests refused while "
          f"api-2 was down); the log verifies")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--project", required=True)
    parser.add_argument("--api", action="append", required=True)
    args = parser.parse_args()
    stack = Stack(args.project, args.api)
    for url in stack.urls:
        stack.ready(url)
    kill(stack, smoke(stack))


if __name__ == "__main__":
    try:
        main()
    except AssertionError as exc:
        sys.exit(f"stack test failed: {exc}")
