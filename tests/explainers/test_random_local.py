"""Randomness is local: a seeded method draws from its own generators only.

Two jobs run at the same time in two threads get exactly what they get one after the
other, and no method reads, seeds or advances numpy's or torch's global generator.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from helpers import make_cnn, make_mlp
from xai_sandbox.explainers import EXPLAINERS, explain, get_explainer
from xai_sandbox.explainers.base import random_generators
from xai_sandbox.models import register

MLP = register(make_mlp(), model_id="mlp", version="1", class_names=list("abc"),
               sample_shape=(6,))
CNN = register(make_cnn(), model_id="cnn", version="1", class_names=list("abc"),
               input_kind="image", sample_shape=(3, 8, 8))
ROWS = np.random.default_rng(5).normal(size=(3, 6)).astype(np.float32)
IMAGES = np.random.default_rng(6).normal(size=(1, 3, 8, 8)).astype(np.float32)

# (name, model, inputs, method, parameters): each samples (kernel_shap with fewer
# coalitions than the 2^6 there are, so shap samples rather than enumerates).
JOBS = [
    ("kernel_shap", MLP, ROWS, "kernel_shap", {"n_samples": 40}),
    ("lime", MLP, ROWS, "lime", {"n_samples": 60}),
    ("permutation_shap", MLP, ROWS, "permutation_shap", {"n_permutations": 8}),
    ("smoothgrad", MLP, ROWS, "smoothgrad", {"n_samples": 4}),
    ("smoothgrad_ig", MLP, ROWS, "smoothgrad",
     {"n_samples": 3, "base_method": "integrated_gradients", "base_params": {"n_steps": 8}}),
    ("lime_image", CNN, IMAGES, "lime", {"n_samples": 30, "patch": 4}),
]
STOCHASTIC = sorted(name for name, cls in EXPLAINERS.items() if cls.samples)


def _run(job: tuple, seed: int | None) -> np.ndarray:
    _, model, inputs, method, params = job
    return explain(model, inputs, method=method, target=1, random_state=seed,
                   **params).values


def test_every_sampling_method_is_covered() -> None:
    assert {job[3] for job in JOBS} == set(STOCHASTIC)
    for name in STOCHASTIC:
        assert get_explainer(name).stochastic()


def _global_state() -> tuple[tuple, torch.Tensor]:
    return np.random.get_state(), torch.random.get_rng_state()


def _same_state(a: tuple[tuple, torch.Tensor], b: tuple[tuple, torch.Tensor]) -> bool:
    (np_a, torch_a), (np_b, torch_b) = a, b
    return (np_a[0] == np_b[0] and np.array_equal(np_a[1], np_b[1])
            and tuple(np_a[2:]) == tuple(np_b[2:]) and torch.equal(torch_a, torch_b))


@pytest.mark.parametrize("job", JOBS, ids=[job[0] for job in JOBS])
@pytest.mark.parametrize("seed", [3, None])
def test_a_method_leaves_the_global_generators_alone(job: tuple, seed: int | None) -> None:
    """Neither a seeded nor an unseeded run reads, seeds or advances a global generator."""
    np.random.seed(11)
    torch.manual_seed(11)
    before = _global_state()
    _run(job, seed)
    assert _same_state(before, _global_state())
    # And the global seed does not reach the result.
    if seed is not None:
        first = _run(job, seed)
        np.random.seed(12)
        torch.manual_seed(12)
        np.testing.assert_array_equal(_run(job, seed), first)


@pytest.mark.parametrize("job", JOBS, ids=[job[0] for job in JOBS])
def test_the_seed_decides_the_draws(job: tuple) -> None:
    np.testing.assert_array_equal(_run(job, 1), _run(job, 1))
    assert not np.array_equal(_run(job, 1), _run(job, 2))
    assert not np.array_equal(_run(job, None), _run(job, None))


def _hammer_torch(stop: threading.Event) -> None:
    """Another thread that keeps seeding and drawing from torch's global generator."""
    while not stop.is_set():
        torch.manual_seed(123)
        torch.rand(256)
        torch.bernoulli(torch.full((64,), 0.5))


def test_concurrent_seeded_jobs_get_their_sequential_results() -> None:
    """Every job twice with two seeds, all at once in threads: each result equals the
    one the same job and seed gives alone, even with a neighbour reseeding torch."""
    work = [(job, seed) for job in JOBS for seed in (1, 2)] * 2
    sequential = {(job[0], seed): _run(job, seed) for job, seed in work}

    start = threading.Barrier(len(work))

    def task(job: tuple, seed: int) -> Callable[[], np.ndarray]:
        def go() -> np.ndarray:
            start.wait()
            return _run(job, seed)
        return go

    stop = threading.Event()
    neighbour = threading.Thread(target=_hammer_torch, args=(stop,), daemon=True)
    neighbour.start()
    try:
        with ThreadPoolExecutor(max_workers=len(work)) as pool:
            futures = [(job[0], seed, pool.submit(task(job, seed))) for job, seed in work]
            concurrent = [(name, seed, f.result(timeout=300)) for name, seed, f in futures]
    finally:
        stop.set()
        neighbour.join()
    for name, seed, values in concurrent:
        np.testing.assert_array_equal(values, sequential[(name, seed)], err_msg=name)


def test_random_generators_are_built_from_the_seed() -> None:
    (a, ta), (b, tb) = random_generators(7), random_generators(7)
    assert a.integers(2**32) == b.integers(2**32)
    assert torch.equal(torch.rand(4, generator=ta), torch.rand(4, generator=tb))
    (c, tc), (d, td) = random_generators(None), random_generators(None)
    assert c.integers(2**62) != d.integers(2**62)
    assert not torch.equal(torch.rand(4, generator=tc), torch.rand(4, generator=td))
