"""Planted answers for the sparse-autoencoder tests: activations built from a known dictionary."""

from __future__ import annotations

import numpy as np


def synthetic_dictionary(n: int, d: int, n_true: int, k: int, *, seed: int = 0,
                         noise: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``x = sum_{j in S} c_j u_j + noise``: ``k`` of ``n_true`` random unit vectors
    ``u_j`` (more of them than dimensions, so they are in superposition) with coefficients
    uniform on [0.5, 1.5].

    Returns the activations ``(n, d)`` float32 and the true dictionary ``(n_true, d)``.
    """
    rng = np.random.default_rng(seed)
    dictionary = rng.normal(size=(n_true, d))
    dictionary /= np.linalg.norm(dictionary, axis=1, keepdims=True)
    chosen = np.argsort(rng.random((n, n_true)), axis=1)[:, :k]
    coefficients = np.zeros((n, n_true))
    np.put_along_axis(coefficients, chosen, rng.uniform(0.5, 1.5, size=(n, k)), axis=1)
    x = coefficients @ dictionary + noise * rng.normal(size=(n, d))
    return x.astype(np.float32), dictionary


def recovery(dictionary: np.ndarray, learned: np.ndarray, threshold: float = 0.9
             ) -> tuple[float, np.ndarray]:
    """Fraction of true directions whose best-matching learned direction has cosine at
    least ``threshold``, and each true direction's best cosine."""
    true = dictionary / np.linalg.norm(dictionary, axis=1, keepdims=True)
    found = learned / np.maximum(np.linalg.norm(learned, axis=1, keepdims=True), 1e-12)
    best = (true @ found.T).max(axis=1)
    return float((best >= threshold).mean()), best
