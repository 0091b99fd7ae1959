"""Sequencing under concurrency, and durability when the writer is killed."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from sqlalchemy import select

from xai_sandbox.settings import Settings
from xai_sandbox.store import Store
from xai_sandbox.store import tables as t
from xai_sandbox.store.verify import verify_log

FP = "ab" * 32
WRITER = Path(__file__).with_name("_writer.py")


def _env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env["XAI_SANDBOX_DATA_DIR"] = str(settings.data_dir)
    env["XAI_SANDBOX_LOG_ORIGIN"] = settings.log_origin
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    if settings.database_url:
        env["XAI_SANDBOX_DATABASE_URL"] = settings.database_url
    else:
        env.pop("XAI_SANDBOX_DATABASE_URL", None)
    return env


def _indexes(store: Store) -> list[int]:
    with store.engine.connect() as conn:
        return list(conn.execute(select(t.log_entries.c.idx).order_by(t.log_entries.c.idx))
                    .scalars())


def _assert_sound(store: Store) -> None:
    idx = _indexes(store)
    assert idx == list(range(len(idx))), "indexes must be 0..n-1 with no gap or duplicate"
    assert store.log.size() == len(idx)
    store.log.checkpoint()
    report = verify_log(store.engine, store.keys.verifiers(), store.log.origin)
    assert report.ok, report.problems


def test_threads_get_consecutive_indexes(store: Store) -> None:
    store.register_model("m", "1", FP)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(30):
                store.record_decision(model_key="m@1", subject_id=f"t{n}-{i}",
                                      inputs={"i": i}, output={"ok": True}, policy_version="p")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert len(_indexes(store)) == 1 + 4 * 30
    _assert_sound(store)


def test_processes_get_consecutive_indexes(store: Store, settings: Settings) -> None:
    store.register_model("m", "1", FP)
    store.subject_ref("warm-up")  # the pepper exists before the writers start
    procs = [subprocess.Popen([sys.executable, str(WRITER), str(n), "single", "40"],
                              env=_env(settings), stdout=subprocess.PIPE, text=True)
             for n in range(3)]
    acked = []
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0
        acked += [int(line.split()[1]) for line in out.splitlines()]
    assert sorted(acked) == list(range(1, 121))
    _assert_sound(store)


def test_sigkill_loses_no_acknowledged_entry(store: Store, settings: Settings) -> None:
    store.register_model("m", "1", FP)
    store.subject_ref("warm-up")
    rng = random.Random(7)
    acked: dict[int, str] = {}
    # At least five kills, and as many more as it takes to have 1,000 acknowledged
    # appends to check (a loaded machine starts the writer slowly): a count, not a time.
    round_ = -1
    while (round_ := round_ + 1) < 5 or (len(acked) < 1000 and round_ < 40):
        proc = subprocess.Popen([sys.executable, str(WRITER), str(round_),
                                 "batch" if round_ % 2 else "single"],
                                env=_env(settings), stdout=subprocess.PIPE, text=True)
        lines: list[str] = []
        reader = threading.Thread(target=lines.extend, args=(proc.stdout,))
        reader.start()
        time.sleep(1.5 + rng.random() * 1.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        reader.join(timeout=30)
        proc.stdout.close()  # type: ignore[union-attr]
        for line in lines:
            parts = line.split()
            if len(parts) < 4 or parts[0] != "ack":
                continue  # a line cut by the kill was never acknowledged
            first, last, ids = int(parts[1]), int(parts[2]), parts[3:]
            acked.update(zip(range(first, last + 1), ids, strict=True))
    assert len(acked) >= 1000, f"only {len(acked)} appends acknowledged"
    reopened = Store(settings)
    try:
        with reopened.engine.connect() as conn:
            stored = {r.idx: r.record_id for r in conn.execute(
                select(t.log_entries.c.idx, t.log_entries.c.record_id))}
        for idx, decision_id in acked.items():
            assert stored.get(idx) == f"decisions:{decision_id}", f"acknowledged entry {idx} lost"
        _assert_sound(reopened)
    finally:
        reopened.close()
