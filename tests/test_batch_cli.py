"""`xai-sandbox batch explain` as a user runs it, interrupted the ways a batch is: the driver
killed with SIGKILL at random points (twice), a Ray worker killed mid-task, Ctrl-C; each
time started again with the same arguments. It ends with exactly the rows of an
uninterrupted run: the same values row by row, no row twice, none missing."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import psutil
import pytest

from clikit import CLI, german_frame, run_cli
from xai_sandbox.workflows.batch import read_shards

ROWS, SHARD = 240, 20     # 12 shards, each a fraction of a second of permutation SHAP
TASK = "ray::_explain_shard_task"
ARGS = ("batch", "explain", "--model", "german-credit-lightgbm", "--input", "rows.parquet",
        "--shard-rows", str(SHARD), "--key", "id", "--method", "permutation_shap",
        "--cpus", "2")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("batch-cli")
    frame = german_frame().drop(columns=["class"]).iloc[:ROWS]
    frame.insert(0, "id", [f"A{i:04d}" for i in range(ROWS)])
    frame.to_parquet(tmp / "rows.parquet")
    done = run_cli(*ARGS, "--output", "reference", cwd=tmp)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"explained {ROWS:,} rows with permutation_shap" in done.stdout
    return tmp


def _table(out: Path) -> pd.DataFrame:
    return pd.concat([t.to_pandas() for t in read_shards(out)], ignore_index=True)


def _shards(out: Path) -> int:
    return len(list(out.glob("part-*.parquet")))


def _start(tmp: Path, out: str) -> psutil.Popen:
    env = {**os.environ, "COLUMNS": "200", "XAI_SANDBOX_DATA_DIR": str(tmp / "data")}
    return psutil.Popen([*CLI, *ARGS, "--output", out], cwd=tmp, env=env, text=True,
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _wait_for(test: Callable[[], object], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not test():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _kill_all(family: list[psutil.Process]) -> None:
    """What a SIGKILL of the driver leaves behind (Ray's agents outlive it) goes too."""
    for p in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(family, timeout=10)


def _workers(driver: psutil.Popen) -> list[psutil.Process]:
    found = []
    for p in driver.children(recursive=True):
        try:
            # Ray titles a worker with its task while it runs one.
            if " ".join(p.cmdline()).startswith(TASK):
                found.append(p)
        except psutil.NoSuchProcess:
            pass
    return found


def test_killed_and_resumed_runs_end_with_the_uninterrupted_rows(folder: Path) -> None:
    out = folder / "out"
    chance = random.Random(int(time.time()))
    written = 0
    # The driver, SIGKILLed at a random point after a random number of new shards.
    for _ in range(2):
        driver = _start(folder, "out")
        target = written + chance.randint(1, 2)
        _wait_for(lambda t=target, d=driver: _shards(out) >= t or d.poll() is not None,
                  "shards to be written")
        time.sleep(chance.uniform(0.0, 0.3))
        family = driver.children(recursive=True)
        driver.send_signal(signal.SIGKILL)
        # At once: Ray's processes hold the driver's stdout, and its workers would go on
        # writing the shards in flight until they noticed.
        _kill_all(family)
        driver.communicate(timeout=30)
        assert not (out / "manifest.json").exists() or driver.returncode == 0
        written = _shards(out)
    assert 0 < written < ROWS // SHARD
    # A worker killed in the middle of a shard: Ray runs the task again, the run finishes.
    driver = _start(folder, "out")
    _wait_for(lambda: _workers(driver) or driver.poll() is not None,
              "a worker to be explaining a shard")
    assert driver.poll() is None, driver.communicate()[0]
    _workers(driver)[0].kill()
    family = driver.children(recursive=True)
    # Ctrl-C once the run has written one more shard: it stops and says how to resume.
    after = _shards(out)
    _wait_for(lambda: _shards(out) > after or driver.poll() is not None, "another shard")
    driver.send_signal(signal.SIGINT)
    text = driver.communicate(timeout=60)[0]
    _kill_all(family)
    if driver.returncode == 0:          # it had finished before the signal came
        assert "explained" in text
    else:
        assert driver.returncode == 130, text
        assert "run the same command again to resume" in text
    finished = run_cli(*ARGS, "--output", "out", cwd=folder)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "kept)" in finished.stdout or "nothing to compute" in finished.stdout

    reference, resumed = _table(folder / "reference"), _table(out)
    assert resumed["key"].tolist() == [f"A{i:04d}" for i in range(ROWS)]
    pd.testing.assert_frame_equal(resumed, reference)
    assert not list(out.glob(".*.tmp"))


def test_an_unknown_model_is_one_line_naming_the_option(folder: Path) -> None:
    done = run_cli(*ARGS[:2], "--model", "credit-v9", *ARGS[4:], "--output", "x", cwd=folder)
    assert done.returncode == 2
    assert done.stdout.strip().splitlines() == [
        "error: --model: must be a registered model (id or id@version; see `xai-sandbox "
        "models register`) or a built-in credit model; got 'credit-v9'"]
    assert not (folder / "x").exists()


def test_batch_report_writes_the_global_report_of_a_finished_batch(folder: Path) -> None:
    import json

    done = run_cli("batch", "report", "reference", "--sample-rows", "200", cwd=folder)
    assert done.returncode == 0, done.stdout + done.stderr
    found = json.loads((folder / "reference" / "global-report.json").read_text())
    top = ", ".join(f"{f['feature']} {f['share']:.0%}" for f in found["importance"][:3])
    assert f"{ROWS:,} rows; the largest shares of |attribution|: {top}" in done.stdout
    assert found["rows"] == ROWS and found["method"] == "permutation_shap"
    assert (folder / "reference" / "global-report.pdf").read_bytes().startswith(b"%PDF")
    missing = run_cli("batch", "report", "nowhere", cwd=folder)
    assert missing.returncode == 2 and "output: must be a finished batch's folder" in \
        missing.stdout
