"""Helpers shared by the benchmark scripts: timing, versions, thread pinning."""

from __future__ import annotations

import argparse
import importlib.metadata
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


def parse(description: str, extra: list[tuple[str, dict[str, Any]]] | None = None
          ) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="smaller run for CI smoke tests")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for both sides")
    for flag, options in extra or []:
        parser.add_argument(flag, **options)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    return args


def versions() -> str:
    names = ("torch", "captum", "shap", "numpy", "xai-sandbox")
    return ", ".join(f"{n} {importlib.metadata.version(n)}" for n in names)


def median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median wall time of ``repeats`` calls after one warm-up; returns the last result."""
    result = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def alternate(fns: dict[str, Callable[[], Any]], repeats: int,
              warmups: dict[str, Callable[[], Any]] | None = None
              ) -> dict[str, tuple[float, Any]]:
    """Time several callables alternating between them, after one warm-up each (the
    callable itself, or a smaller one from ``warmups``)."""
    results = {name: (warmups or fns).get(name, fn)() for name, fn in fns.items()}
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(times[name]), results[name]) for name in fns}
