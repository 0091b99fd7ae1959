"""Shared fixtures: tiny models with known answers, and the real demo models."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True, scope="session")
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Demo models are cached in a fresh folder for the test session."""
    os.environ["XAI_SANDBOX_CACHE"] = str(tmp_path_factory.mktemp("xai-cache"))


def make_mlp(d: int = 6, hidden: int = 8, out: int = 3, seed: int = 0) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(d, hidden), torch.nn.ReLU(),
                                torch.nn.Linear(hidden, out))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.7)
    return model.eval()


def make_cnn(seed: int = 0) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(4, 5, 3, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(5, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return model.eval()


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
