"""The REST service under load: wrk (a real HTTP load generator) against ``xai-sandbox serve``
on loopback.

1. ``POST /v1/decisions`` on German credit (LightGBM, TreeSHAP, counterfactuals, report,
   audit log) at concurrency 16: throughput, p50 and p99 latency; afterwards every
   acknowledged decision is looked up in the database and in the audit log.
2. The subject view of stored decisions, each read by its own subject's key (the read
   writes an access event to the audit log): throughput and p99, against the target of
   500 requests/s with p99 under 50 ms on 2 cores. ``GET /health`` (one small query, no
   access event) is run the same way as the framework's own ceiling, and the ratio is
   printed.

Needs ``wrk`` (Debian: ``apt-get install wrk``). Both wrk and the server share this
machine's cores, as they would on a 2-core host.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parse
from xai_sandbox.demos.credit import credit_models
from xai_sandbox.settings import Settings
from xai_sandbox.store import Store
from xai_sandbox.store import tables as t


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def lua_string(text: str) -> str:
    return "[==[" + text + "]==]"


def wrk(url: str, script: str, *, seconds: int, connections: int, threads: int = 2) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(script)
        path = fh.name
    try:
        out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s",
                              "--latency", "--timeout", "10s", "-s", path, url],
                             capture_output=True, text=True, timeout=seconds + 60)
    finally:
        os.unlink(path)
    text = out.stdout

    def latency(pct: str) -> float:
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        if m is None:
            raise RuntimeError(f"wrk printed no {pct}% latency:\n{text}\n{out.stderr}")
        scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
        return float(m.group(1)) * scale

    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    total = re.search(r"(\d+) requests in", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(r"Socket errors: (.*)", text)
    return {"rps": float(rps.group(1)) if rps else 0.0, "p50": latency("50"),
            "p99": latency("99"), "requests": int(total.group(1)) if total else 0,
            "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": errors.group(1) if errors else "none", "raw": text}


DECISION_SCRIPT = """
local bodies = {%(bodies)s}
local outdir = %(outdir)s
local counter = 0
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end
local n, ids
function init(args)
  ids = io.open(outdir .. "/ids-" .. tid .. ".txt", "w")
  n = tid * 7919
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = %(auth)s
request = function()
  n = n + 1
  return wrk.format(nil, "/v1/decisions", nil, bodies[(n %% #bodies) + 1])
end
response = function(status, headers, body)
  if status == 201 or status == 202 then
    ids:write(body:match('"decision_id":"([^"]+)"') .. "\\n")
    ids:flush()
  end
end
"""

VIEW_SCRIPT = """
local pairs_ = {%(pairs)s}
local n = 0
local counter = 0
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end
function init(args) n = tid * 104729 end
request = function()
  n = n + 1
  local p = pairs_[(n %% #pairs_) + 1]
  return wrk.format("GET", "/v1/decisions/" .. p[1], {["Authorization"] = "Bearer " .. p[2]})
end
"""

HEALTH_SCRIPT = """
request = function() return wrk.format("GET", "/health") end
"""


def serve(env: dict[str, str], port: int, workers: int = 1) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "xai_sandbox.cli", "serve", "--port",
                             str(port), "--log-level", "warning", "--workers", str(workers)],
                            env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not start")


def main() -> None:
    args = parse(__doc__.splitlines()[0],
                 extra=[("--wrk-threads", {"type": int, "default": 1,
                                           "help": "wrk threads for the read runs (one "
                                                   "leaves the other core to the server)"})])
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian: apt-get install wrk)")
    seconds = 3 if args.quick else 20
    n_subjects = 40 if args.quick else 300
    data_dir = Path(tempfile.mkdtemp(prefix="xai-bench-service-"))
    env = {**os.environ, "XAI_SANDBOX_DATA_DIR": str(data_dir),
           "XAI_SANDBOX_RATE_LIMIT_SUBJECT_PER_MINUTE": "1000000",
           "XAI_SANDBOX_RATE_LIMIT_KEY_PER_MINUTE": "1000000"}
    settings = Settings(data_dir=data_dir)

    from xai_sandbox.service.demo import setup_demo
    from xai_sandbox.store.accounts import Accounts
    from xai_sandbox.workflows import Decider

    store = Store(settings)
    made = setup_demo(store)
    accounts = Accounts(store.engine, store.writer)
    rows = credit_models().data.rows
    decider = Decider(store)
    decider.load_registered()
    view_pairs = []
    for i in range(n_subjects):
        subject_id = f"bench-subject-{i}"
        accounts.create_principal(f"bench-{i}", ["subject"],
                                  subject_ref=store.subject_ref(subject_id))
        key = accounts.issue_key(f"bench-{i}")
        out = decider.decide(model_id="credit", subject_id=subject_id,
                             features=rows[i % len(rows)])
        view_pairs.append((out.decision_id, key))
    store.close()

    port = free_port()
    proc = serve(env, port)
    url = f"http://127.0.0.1:{port}"
    try:
        # 1. Decisions at concurrency 16.
        outdir = Path(tempfile.mkdtemp(prefix="xai-bench-ids-"))
        rng = random.Random(0)
        bodies = [json.dumps({"model_id": "credit", "subject_id": f"load-{i}",
                              "features": rows[rng.randrange(len(rows))]})
                  for i in range(200)]
        script = DECISION_SCRIPT % {
            "bodies": ",".join(lua_string(b) for b in bodies),
            "outdir": lua_string(str(outdir)),
            "auth": lua_string(f"Bearer {made['keys']['olivia-operator']}")}
        decisions = wrk(url, script, seconds=seconds, connections=16)
        time.sleep(max(3.0, decisions["p99"] / 1000 * 2))  # let requests in flight finish
        # 2. Subject view, and the framework's ceiling on the same machine.
        pairs = ",".join("{" + lua_string(d) + "," + lua_string(k) + "}" for d, k in view_pairs)
        httpx.get(f"{url}/health")
        views = wrk(url, VIEW_SCRIPT % {"pairs": pairs}, seconds=seconds, connections=16,
                    threads=args.wrk_threads)
        health = wrk(url, HEALTH_SCRIPT, seconds=seconds, connections=16,
                     threads=args.wrk_threads)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)

    acknowledged = []
    for path in outdir.glob("ids-*.txt"):
        acknowledged += [line.strip() for line in path.read_text().splitlines() if line.strip()]
    store = Store(settings)
    try:
        with store.engine.connect() as conn:
            stored = set(conn.execute(t.decisions.select().with_only_columns(
                t.decisions.c.id)).scalars())
            logged = {r.removeprefix("decisions:") for r in conn.execute(
                t.log_entries.select().with_only_columns(t.log_entries.c.record_id).where(
                    t.log_entries.c.kind == "decision_recorded")).scalars()}
            reported = set(conn.execute(t.reports.select().with_only_columns(
                t.reports.c.decision_id)).scalars())
            access = conn.execute(t.access_events.select().with_only_columns(
                t.access_events.c.id)).all()
    finally:
        store.close()
    ack = set(acknowledged)
    print(f"xai-sandbox service benchmark, {seconds} s per run, 16 connections (wrk 2 "
          f"threads for decisions, {args.wrk_threads} for reads), {os.cpu_count()} cores "
          f"shared by wrk and the server")
    print(f"POST /v1/decisions (LightGBM + TreeSHAP + counterfactuals + report + log): "
          f"{decisions['rps']:.1f} req/s, p50 {decisions['p50']:.1f} ms, "
          f"p99 {decisions['p99']:.1f} ms, non-2xx {decisions['non2xx']}, "
          f"socket errors {decisions['socket_errors']}")
    print(f"acknowledged {len(ack)} decisions: stored {len(ack & stored)}, logged "
          f"{len(ack & logged)}, explained {len(ack & reported)}, missing "
          f"{len(ack - stored) + len(ack - logged)}")
    print(f"GET /v1/decisions/{{id}} (subject view + access event): {views['rps']:.1f} "
          f"req/s, p50 {views['p50']:.1f} ms, p99 {views['p99']:.1f} ms, non-2xx "
          f"{views['non2xx']}; target 500 req/s: "
          f"{'met' if views['rps'] >= 500 else 'NOT met'}, p99 < 50 ms: "
          f"{'met' if views['p99'] < 50 else 'NOT met'}")
    print(f"access events in the log: {len(access)} (subject-view requests answered: "
          f"{views['requests']})")
    print(f"GET /health (framework ceiling): {health['rps']:.1f} req/s, p99 "
          f"{health['p99']:.1f} ms; subject view runs at "
          f"{views['rps'] / health['rps']:.2f}x of it")
    if ack - stored or ack - logged:
        sys.exit("an acknowledged decision is missing")


if __name__ == "__main__":
    main()
