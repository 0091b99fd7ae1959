"""Batch explanations on Ray (``explain_batch``) against the single-process loop a user
would otherwise write with shap or Captum, on German-credit-shaped rows.

The rows are sampled from the real German credit data with noise: each numeric feature
jittered by a tenth of its spread (rounded where the data are whole numbers, kept within
the schema's bounds), each categorical feature drawn from its frequencies. Models: the
built-in LightGBM (TreeSHAP) and MLP (Integrated Gradients, 50 Gauss-Legendre steps on
both sides). Ours: Ray with 2 CPUs, one task at a time (1 core) or as many as Ray runs
(2 cores); every run reads the Parquet file in shards, scores, explains, ranks the reason
codes and writes Parquet shards with a manifest. The peer: the same file read in the same
chunks in this process, encoded, explained by shap's TreeExplainer or Captum's
IntegratedGradients on the whole chunk (nothing written). Ours and the peer alternate;
medians of ``--repeats``. Peak memory: the largest sum of the resident sets of this process
and Ray's workers, sampled every 50 ms, at 10,000 rows and at ``--rows``.

Alibi's distributed KernelSHAP is not measured: alibi is not in this machine's offline
package index (nothing is downloaded at run time), and its Ray path pins ray<2.x versions
older than the project's.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
import torch

from _common import parse, versions
from xai_sandbox.datasets import load_german_credit
from xai_sandbox.datasets.rows import schema_rows
from xai_sandbox.datasets.tables import iter_table
from xai_sandbox.settings import Settings
from xai_sandbox.store import Store
from xai_sandbox.workflows import Decider
from xai_sandbox.workflows.batch import explain_batch
from xai_sandbox.workflows.scoring import outcomes

SHARD = 8192          # rows per shard (--quick: 500)


def shaped_rows(n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` German-credit-shaped rows: the real rows resampled, with noise."""
    data = load_german_credit()
    real = pd.DataFrame(list(data.rows))
    rng = np.random.default_rng(seed)
    out = real.iloc[rng.integers(0, len(real), n)].reset_index(drop=True)
    for spec in data.schema.features:
        column = real[spec.name]
        if spec.kind == "numeric":
            noisy = out[spec.name].to_numpy(dtype=np.float64) + rng.normal(
                0.0, 0.1 * float(column.std()), n)
            if (column == column.round()).all():
                noisy = noisy.round()
            low, high = spec.bounds or (float(column.min()), float(column.max()))
            out[spec.name] = np.clip(noisy, low, high)
        else:
            freq = column.value_counts(normalize=True)
            out[spec.name] = rng.choice(freq.index.to_numpy(), size=n, p=freq.to_numpy())
    return out


class PeakMemory:
    """The largest RSS of this process plus its descendants (Ray's workers), sampled."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += p.memory_info().rss
            self.peak = max(self.peak, total)
            self._stop.wait(0.05)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def peer(served: Any, method: str, source: Path, shard: int) -> Callable[[], int]:
    """The loop a user writes: read in chunks, encode, explain with the library."""
    schema = served.schema
    if method == "tree_shap":
        import shap

        explainer = shap.TreeExplainer(served.model.adapter.estimator)

        def explain_chunk(x: np.ndarray, target: np.ndarray) -> None:
            explainer.shap_values(x)
    else:
        from captum.attr import IntegratedGradients

        ig = IntegratedGradients(served.model.adapter.module)
        base = torch.as_tensor(served.model.reference, dtype=torch.float32)

        def explain_chunk(x: np.ndarray, target: np.ndarray) -> None:
            ig.attribute(torch.as_tensor(x, dtype=torch.float32), baselines=base,
                         target=torch.as_tensor(target), n_steps=50)

    def run() -> int:
        rows = 0
        for frame in iter_table(source, shard, columns=list(schema.names)):
            x = schema.encode(schema_rows(schema, frame))
            decided, _ = outcomes(served, served.model.probabilities(x))
            explain_chunk(x, decided)
            rows += len(frame)
        return rows
    return run


def ours(served: Any, method: str, source: Path, folder: Path, one_core: bool, shard: int
         ) -> Callable[[], int]:
    params = {"n_steps": 50} if method == "integrated_gradients" else {}
    runs = iter(range(10**6))

    def run() -> int:
        out = folder / f"{source.stem}-{method}-{'1' if one_core else '2'}-{next(runs)}"
        result = explain_batch(served, source, out, method=method, params=params,
                               shard_rows=shard, max_in_flight=1 if one_core else None)
        return result.rows
    return run


def main() -> None:
    args = parse(__doc__ or "", [
        ("--rows", {"type": int, "default": 1_000_000, "help": "rows of the large input"}),
        ("--repeats", {"type": int, "default": 1, "help": "alternating runs per side"}),
        ("--memory-rows", {"type": int, "default": 1_000_000,
                           "help": "rows of the peak-memory run (beside one of 10,000)"})])
    import ray

    n = 4000 if args.quick else args.rows
    shard = 500 if args.quick else SHARD
    repeats = 1 if args.quick else args.repeats
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        store = Store(Settings(data_dir=tmp / "data"))
        decider = Decider(store)
        models = {}
        for name, method in (("german-credit-lightgbm", "tree_shap"),
                             ("german-credit-mlp", "integrated_gradients")):
            models[method] = decider.register({
                "model_id": name, "version": "1",
                "source": {"kind": "builtin", "name": name},
                "policy": {"methods": [method], "adverse_class": "bad",
                           "outcome_labels": {c: {"en": c, "zh": c} for c in ("good", "bad")}}})
        small, large = tmp / "small.parquet", tmp / "large.parquet"
        shaped_rows(min(n, 10_000), seed=1).to_parquet(small)
        shaped_rows(n).to_parquet(large)
        started = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
        print(f"# {versions()}, ray {ray.__version__}; Ray started in "
              f"{time.perf_counter() - started:.1f} s; {n:,} rows, shards of {shard:,}; "
              f"load {os.getloadavg()[0]:.2f}; median of {repeats}")
        print(f"{'method':22} {'ours 1 core':>12} {'ours 2 cores':>13} {'2/1':>5} "
              f"{'peer loop':>10} {'ours 2c/peer':>13}   rows/s")
        try:
            for method, served in models.items():
                sides = {"one": ours(served, method, large, tmp, True, shard),
                         "two": ours(served, method, large, tmp, False, shard),
                         "peer": peer(served, method, large, shard)}
                for warm in (ours(served, method, small, tmp, False, shard),
                             peer(served, method, small, shard)):
                    warm()          # Ray's workers started, the model deserialised
                times: dict[str, list[float]] = {k: [] for k in sides}
                for _ in range(repeats):
                    for name, fn in sides.items():
                        t = time.perf_counter()
                        assert fn() == n
                        times[name].append(time.perf_counter() - t)
                rate = {k: n / statistics.median(v) for k, v in times.items()}
                print(f"{method:22} {rate['one']:12,.0f} {rate['two']:13,.0f} "
                      f"{rate['two'] / rate['one']:5.2f} {rate['peer']:10,.0f} "
                      f"{rate['two'] / rate['peer']:13.2f}")
            served = models["tree_shap"]
            huge = tmp / "memory.parquet"
            big = n if args.quick else args.memory_rows
            shaped_rows(big, seed=3).to_parquet(huge)
            for source, rows in ((small, min(n, 10_000)), (huge, big)):
                with PeakMemory() as memory:
                    t = time.perf_counter()
                    ours(served, "tree_shap", source, tmp / "memory", False, shard)()
                print(f"peak memory, tree_shap, {rows:,} rows: {memory.peak / 2**20:,.0f} MiB "
                      f"(RSS summed over this process and Ray's workers; "
                      f"{rows / (time.perf_counter() - t):,.0f}"
                      " rows/s)")
            # One task's fixed cost: a batch of one tiny shard per core, after warm-up.
            tiny = tmp / "tiny.parquet"
            shaped_rows(64, seed=2).to_parquet(tiny)
            task = []
            for k in range(5):
                t = time.perf_counter()
                explain_batch(served, tiny, tmp / f"tiny-{k}", shard_rows=32)
                task.append((time.perf_counter() - t) / 2)
            print(f"overhead per task (a 32-row shard, incl. its write): "
                  f"{statistics.median(task) * 1e3:.0f} ms")
        finally:
            ray.shutdown()
            store.close()


if __name__ == "__main__":
    main()
