"""Shared fixtures: tiny models with known answers, and the real demo models."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import make_cnn, make_mlp

os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from pgserver import MissingPostgresError, PostgresServer

# `make test` runs one pytest-xdist worker per core: each worker's torch gets its share of
# the cores, so the workers do not oversubscribe the machine.
# A worker also inherits COLUMNS=80 and LINES=24 from xdist, which would fix the width of
# the command line's rich console at import; the tests set COLUMNS per command instead.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // _WORKERS))
    for _name in ("COLUMNS", "LINES"):
        os.environ.pop(_name, None)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server on loopback for the session (see tools/pgserver.py)."""
    try:
        server = PostgresServer()
    except MissingPostgresError as exc:
        pytest.fail(str(exc), pytrace=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True, scope="session")
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Demo models are cached in a fresh folder for the test session."""
    os.environ["XAI_SANDBOX_CACHE"] = str(tmp_path_factory.mktemp("xai-cache"))


@pytest.fixture
def mlp() -> torch.nn.Module:
    return make_mlp()


@pytest.fixture
def cnn() -> torch.nn.Module:
    return make_cnn()


@pytest.fixture
def rows() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(4, 6)).astype(np.float32)


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(2).normal(size=(2, 3, 8, 8)).astype(np.float32)


@pytest.fixture(scope="session")
def credit():  # type: ignore[no-untyped-def]
    from xai_sandbox.demos.credit import credit_models

    return credit_models()


@pytest.fixture(scope="session")
def efficientnet():  # type: ignore[no-untyped-def]
    from xai_sandbox.demos.images import efficientnet_lite0

    return efficientnet_lite0()


@pytest.fixture(scope="session")
def cat() -> tuple[np.ndarray, np.ndarray]:
    from xai_sandbox.demos.images import load_photo, preprocess

    pixels = load_photo("chelsea")
    return pixels, preprocess(pixels)
