"""The deployment's throughput: decisions and subject-view reads per second, p50 and p99,
through ``xai-sandbox serve`` on SQLite (one process, the default) and on PostgreSQL with 1
and 2 API worker processes, with wrk on loopback (all on this machine's cores).

Each configuration gets a fresh database with the demo's models and 300 subjects; the
decision run posts German credit applications (LightGBM, TreeSHAP in the request,
counterfactuals, report, audit log) at concurrency 16; the read run reads each subject's
view with its own key (an access event in the log). Printed: one row per configuration,
then the ratios (2 workers to 1; PostgreSQL to SQLite).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from _common import parse
from bench_service import DECISION_SCRIPT, VIEW_SCRIPT, free_port, lua_string, serve, wrk
from pgserver import PostgresServer
from xai_sandbox.demos.credit import credit_models
from xai_sandbox.settings import Settings
from xai_sandbox.store import Store


def prepare(settings: Settings, subjects: int) -> tuple[str, list[tuple[str, str]]]:
    """The demo on a fresh database; returns the operator's key and (decision, key) pairs."""
    from xai_sandbox.service.demo import setup_demo
    from xai_sandbox.store.accounts import Accounts
    from xai_sandbox.workflows import Decider

    store = Store(settings)
    try:
        made = setup_demo(store)
        accounts = Accounts(store.engine, store.writer)
        rows = credit_models().data.rows
        decider = Decider(store)
        decider.load_registered()
        pairs = []
        for i in range(subjects):
            subject_id = f"bench-subject-{i}"
            accounts.create_principal(f"bench-{i}", ["subject"],
                                      subject_ref=store.subject_ref(subject_id))
            key = accounts.issue_key(f"bench-{i}")
            out = decider.decide(model_id="credit", subject_id=subject_id,
                                 features=rows[i % len(rows)])
            pairs.append((out.decision_id, key))
    finally:
        store.close()
    return made["keys"]["olivia-operator"], pairs


def run(name: str, database_url: str | None, workers: int, seconds: int, subjects: int
        ) -> dict[str, object]:
    data_dir = Path(tempfile.mkdtemp(prefix="xai-bench-deploy-"))
    settings = Settings(data_dir=data_dir, database_url=database_url)
    operator, pairs = prepare(settings, subjects)
    env = {**os.environ, "XAI_SANDBOX_DATA_DIR": str(data_dir),
           "XAI_SANDBOX_RATE_LIMIT_SUBJECT_PER_MINUTE": "1000000",
           "XAI_SANDBOX_RATE_LIMIT_KEY_PER_MINUTE": "1000000"}
    if database_url:
        env["XAI_SANDBOX_DATABASE_URL"] = database_url
    port = free_port()
    proc = serve(env, port, workers=workers)
    url = f"http://127.0.0.1:{port}"
    rows = credit_models().data.rows
    rng = random.Random(0)
    bodies = [json.dumps({"model_id": "credit", "subject_id": f"load-{i}",
                          "features": rows[rng.randrange(len(rows))]}) for i in range(200)]
    outdir = Path(tempfile.mkdtemp(prefix="xai-bench-ids-"))
    try:
        decisions = wrk(url, DECISION_SCRIPT % {
            "bodies": ",".join(lua_string(b) for b in bodies),
            "outdir": lua_string(str(outdir)), "auth": lua_string(f"Bearer {operator}")},
            seconds=seconds, connections=16)
        time.sleep(max(2.0, decisions["p99"] / 1000 * 2))
        views = wrk(url, VIEW_SCRIPT % {"pairs": ",".join(
            "{" + lua_string(d) + "," + lua_string(k) + "}" for d, k in pairs)},
            seconds=seconds, connections=16, threads=1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        shutil.rmtree(data_dir, ignore_errors=True)
    return {"name": name, "workers": workers, "decisions": decisions, "views": views}


def main() -> None:
    args = parse(__doc__.splitlines()[0])
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian: apt-get install wrk)")
    seconds = 3 if args.quick else 15
    subjects = 40 if args.quick else 300
    postgres = PostgresServer()
    postgres.start()
    try:
        results = [run("SQLite, 1 process", None, 1, seconds, subjects),
                   run("PostgreSQL, 1 API worker", postgres.new_database(), 1, seconds,
                       subjects),
                   run("PostgreSQL, 2 API workers", postgres.new_database(), 2, seconds,
                       subjects)]
    finally:
        postgres.stop()
    load = os.getloadavg()[0]
    print(f"xai-sandbox deployment benchmark: {seconds} s per run, 16 connections, "
          f"{os.cpu_count()} cores shared by wrk, the server and PostgreSQL (load {load:.1f})")
    print(f"{'configuration':28} {'decisions/s':>12} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'views/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for r in results:
        d, v = r["decisions"], r["views"]
        assert isinstance(d, dict)
        assert isinstance(v, dict)
        print(f"{r['name']:28} {d['rps']:12.1f} {d['p50']:8.1f} {d['p99']:8.1f} "
              f"{v['rps']:9.1f} {v['p50']:8.1f} {v['p99']:8.1f}")
        if d["non2xx"] or v["non2xx"]:
            sys.exit(f"{r['name']}: {d['non2xx']} + {v['non2xx']} answers were not 2xx")
    sqlite, one, two = (dict(r["decisions"]) for r in results)  # type: ignore[call-overload]
    vs, v1, v2 = (dict(r["views"]) for r in results)  # type: ignore[call-overload]
    print(f"ratios: decisions 2 workers / 1 = {two['rps'] / one['rps']:.2f}x, "
          f"PostgreSQL 1 worker / SQLite = {one['rps'] / sqlite['rps']:.2f}x; views 2 / 1 = "
          f"{v2['rps'] / v1['rps']:.2f}x, PostgreSQL / SQLite = {v1['rps'] / vs['rps']:.2f}x")


if __name__ == "__main__":
    main()
