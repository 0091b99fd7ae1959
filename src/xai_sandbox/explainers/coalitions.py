"""The coalition game of the exact and sampled Shapley methods: v(S) for coalitions of
players against a background, and the exact Shapley sum over all 2^d coalitions.

A coalition is a bit mask over players (bit p set: player p takes its columns from the
explained row, the others come from each background row); ``owner[j]`` is the player of
column j. Composite rows are built with exact 0/1 products or ``where``, so the full
coalition is exactly the row.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from xai_sandbox.models.adapters import ModelAdapter

__all__ = ["coalition_values", "coalition_values_rows", "shapley_from_values"]

# Elements of model input (rows x columns) per call when evaluating coalitions on a CPU,
# past which a CPU gains nothing; the memory budget may allow fewer (the Shapley methods
# pass ``elements`` from it).
BATCH_ELEMENTS = 1 << 22


def coalition_values(adapter: ModelAdapter, x: np.ndarray, background: np.ndarray,
                     owner: np.ndarray, coalitions: np.ndarray, target: int, *,
                     elements: int = BATCH_ELEMENTS) -> np.ndarray:
    """v(S) for each coalition: mean output with S's columns from ``x``, the rest from
    each background row.

    ``owner[j]`` is the player of column j; ``coalitions`` are bit masks over players
    (bit p set: player p takes its columns from ``x``). Composite rows are built with
    ``where``, so the full coalition is exactly ``x``. A model call carries at most
    ``elements`` input elements (one coalition's composites at least).
    """
    B, d = background.shape
    per = max(1, elements // max(1, B * d))
    out = np.empty(coalitions.shape[0])
    to_tensor = getattr(adapter, "to_tensor", None)
    if adapter.differentiable and to_tensor is not None:
        xt, bt = to_tensor(x[None]), to_tensor(background)
        players = int(owner.max()) + 1
        every = coalitions.shape[0] == 1 << players and bool(
            (coalitions == np.arange(1 << players)).all())
        cached = _take_table(players, owner.tobytes()) if every else None
        with torch.no_grad():
            for start in range(0, coalitions.shape[0], per):
                if cached is not None:
                    take, skip = cached[0][start : start + per], cached[1][start : start + per]
                else:
                    ids = torch.as_tensor(coalitions[start : start + per])
                    take = _take(ids, owner)
                    skip = 1.0 - take
                # take * x + (1 - take) * b is exactly x or b (products with 0 and 1 are
                # exact), and cheaper on the CPU than torch.where.
                comp = take[:, None, :].to(xt) * xt[None] + skip[:, None, :].to(bt) * bt[None]
                scores = adapter.forward_tensor(comp.reshape(-1, d))[:, target]
                out[start : start + per] = (
                    scores.reshape(len(take), B).mean(dim=1).double().cpu().numpy())
        return out
    for start in range(0, coalitions.shape[0], per):
        ids_np = coalitions[start : start + per]
        take_np = ((ids_np[:, None] >> owner[None, :]) & 1).astype(bool)
        comp_np = np.where(take_np[:, None, :], x[None, None, :], background[None, :, :])
        scores_np = adapter.predict(comp_np.reshape(-1, d))[:, target]
        out[start : start + per] = scores_np.reshape(len(ids_np), B).mean(axis=1)
    return out


def _take(ids: torch.Tensor, owner: np.ndarray) -> torch.Tensor:
    """(m, columns) float 0/1: whether coalition ``ids[k]`` takes column j from x."""
    own = torch.as_tensor(owner, dtype=torch.int64)
    return ((ids[:, None] >> own[None, :]) & 1).to(torch.float32)


@functools.lru_cache(maxsize=4)
def _take_table(players: int, owner_bytes: bytes) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The take matrix of all 2^players coalitions and its complement, kept while it is
    small (up to 2^24 cells); ``None`` when it is larger."""
    owner = np.frombuffer(owner_bytes, dtype=np.int64).copy()
    if (1 << players) * owner.shape[0] > 1 << 24:
        return None
    take = _take(torch.arange(1 << players, dtype=torch.int64), owner)
    return take, 1.0 - take


@functools.lru_cache(maxsize=8)
def size_weights(d: int) -> tuple[np.ndarray, np.ndarray]:
    """Per coalition mask: the Shapley weight when it gains a player (|S|-1 before) and
    when it lacks one (|S| before)."""
    ids = np.arange(1 << d, dtype=np.int64)
    sizes = np.zeros(1 << d, dtype=np.int64)
    for i in range(d):
        sizes += (ids >> i) & 1
    weight = np.array([math.factorial(s) * math.factorial(d - s - 1) / math.factorial(d)
                       for s in range(d)] + [0.0])
    with_i = np.where(sizes > 0, weight[np.maximum(sizes - 1, 0)], 0.0)
    return with_i, weight[sizes]


def shapley_from_values(v: np.ndarray, d: int) -> np.ndarray:
    """Exact Shapley values from v over all 2^d coalitions (index = bit mask); ``v`` of
    shape (2^d,) gives (d,), of shape (rows, 2^d) gives (rows, d).

    phi_i = sum_{S with i} w(|S|-1) v(S) - sum_{S without i} w(|S|) v(S); with
    c = a + b (a, b the two weighted terms) that is sum_{S with i} c(S) - sum_S b(S), and
    the masks with bit i set are a strided view of c.
    """
    v = np.asarray(v)
    lead = v.shape[:-1]
    with_i, without_i = size_weights(d)
    a, b = v * with_i, v * without_i
    c, total_b = a + b, b.sum(axis=-1)
    return np.stack([c.reshape(*lead, -1, 2, 1 << i)[..., 1, :].sum(axis=(-2, -1)) - total_b
                     for i in range(d)], axis=-1)


def coalition_values_rows(adapter: ModelAdapter, X: np.ndarray, background: np.ndarray,
                          owner: np.ndarray, coalitions: np.ndarray, targets: np.ndarray,
                          *, elements: int = BATCH_ELEMENTS) -> np.ndarray:
    """v(S) of every coalition for every row of ``X``: shape (rows, coalitions).

    The same game as :func:`coalition_values`, with the composites of several rows in one
    model call where one row's are few (a small game, or a small background): a call then
    carries about ``elements`` inputs, and the model's own batching and threads do
    the rest. A row whose composites alone exceed that is evaluated on its own, in chunks.
    """
    n, (B, d), m = X.shape[0], background.shape, coalitions.shape[0]
    out = np.empty((n, m))
    rows_per_call = elements // max(1, m * B * d)
    if rows_per_call < 2:
        for r in range(n):
            out[r] = coalition_values(adapter, X[r], background, owner, coalitions,
                                      int(targets[r]), elements=elements)
        return out
    to_tensor = getattr(adapter, "to_tensor", None)
    if adapter.differentiable and to_tensor is not None:
        players = int(owner.max()) + 1
        every = m == 1 << players and bool((coalitions == np.arange(1 << players)).all())
        cached = _take_table(players, owner.tobytes()) if every else None
        take, skip = cached if cached is not None else _pair(
            _take(torch.as_tensor(coalitions), owner))
        bt = to_tensor(background)
        take, skip = take.to(bt)[None, :, None, :], skip.to(bt)[None, :, None, :]
        with torch.no_grad():
            for start in range(0, n, rows_per_call):
                xt = to_tensor(X[start : start + rows_per_call])
                comp = take * xt[:, None, None, :] + skip * bt[None, None]
                scores = adapter.forward_tensor(comp.reshape(-1, d))
                scores = scores.reshape(len(xt), m * B, -1)[
                    torch.arange(len(xt)), :,
                    torch.as_tensor(targets[start : start + len(xt)], dtype=torch.int64)]
                out[start : start + len(xt)] = (
                    scores.reshape(len(xt), m, B).mean(dim=2).double().cpu().numpy())
        return out
    take_np = ((coalitions[:, None] >> owner[None, :]) & 1).astype(bool)
    for start in range(0, n, rows_per_call):
        xs = X[start : start + rows_per_call]
        comp_np = np.where(take_np[None, :, None, :], xs[:, None, None, :],
                           background[None, None])
        scores_np = adapter.predict(comp_np.reshape(-1, d)).reshape(len(xs), m * B, -1)
        picked = scores_np[np.arange(len(xs)), :, targets[start : start + len(xs)]]
        out[start : start + len(xs)] = picked.reshape(len(xs), m, B).mean(axis=2)
    return out


def _pair(take: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return take, 1.0 - take

