"""Training a TopK SAE: Adam on an MSE loss, unit-norm decoder rows, dead-feature resampling."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from xai_sandbox.errors import InvalidInputError
from xai_sandbox.text import checks
from xai_sandbox.text.sae.coder import TopKSAE

__all__ = ["SAETrainResult", "train_sae"]


# ---------------------------------------------------------------------------- training
@dataclass(frozen=True)
class SAETrainResult:
    """A trained SAE and how well it fits the activations it was trained on.

    Attributes
    ----------
    sae:
        The trained :class:`TopKSAE`, in the activations' own units (the trainer's input
        scaling is folded into the biases).
    explained_variance:
        ``1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2`` over all rows.
    l0:
        Mean number of active features per row.
    dead_fraction:
        Fraction of features that fire on no row.
    mse:
        Mean squared error per element, in the activations' units.
    n_resampled:
        Total number of dead features re-initialised during training.
    losses:
        The training loss (normalised units) at every step.
    parameters:
        The training parameters and the input scale.
    """

    sae: TopKSAE
    explained_variance: float
    l0: float
    dead_fraction: float
    mse: float
    n_resampled: int
    losses: tuple[float, ...]
    parameters: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe summary (the weights are not included)."""
        return {"d_in": self.sae.d_in, "n_features": self.sae.n_features, "k": self.sae.k,
                "explained_variance": self.explained_variance, "l0": self.l0,
                "dead_fraction": self.dead_fraction, "mse": self.mse,
                "n_resampled": self.n_resampled, "losses": list(self.losses),
                "parameters": dict(self.parameters)}


def _activations(activations: Any) -> torch.Tensor:
    if isinstance(activations, torch.Tensor):
        x = activations.detach().to("cpu", torch.float32)
    elif isinstance(activations, np.ndarray):
        if activations.dtype.kind not in "fiu":
            raise InvalidInputError("activations", "must be numeric", activations.dtype)
        x = torch.as_tensor(np.asarray(activations, dtype=np.float32))
    else:
        raise InvalidInputError("activations", "must be a numpy array or a torch tensor",
                                type(activations).__name__)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
        raise InvalidInputError("activations", "must be 2-D (rows, width) with at least two "
                                "rows", tuple(x.shape))
    if not bool(torch.isfinite(x).all()):
        raise InvalidInputError("activations", "must be finite (no NaN or infinity)",
                                "non-finite values")
    return x


@torch.no_grad()
def _resample(sae: TopKSAE, x: torch.Tensor, dead: torch.Tensor, opt: torch.optim.Adam,
              gen: torch.Generator, pool: int) -> int:
    """Point dead features at the residuals of high-loss rows (sampled with probability
    proportional to the squared error), and restart their optimiser state."""
    index = torch.randperm(x.shape[0], generator=gen)[:pool]
    rows = x[index]
    residual = rows - sae(rows)
    loss = (residual ** 2).sum(dim=1)
    n_dead = int(dead.sum())
    if n_dead == 0 or float(loss.sum()) <= 0.0:
        return 0
    replace = n_dead > int((loss > 0).sum())
    chosen = torch.multinomial(loss, n_dead, replacement=replace, generator=gen)
    directions = residual[chosen]
    directions /= directions.norm(dim=1, keepdim=True).clamp_min(1e-12)
    which = torch.nonzero(dead).squeeze(1)
    alive = ~dead
    enc_norm = float(sae.W_enc[:, alive].norm(dim=0).mean()) if bool(alive.any()) else 1.0
    sae.W_dec[which] = directions
    sae.W_enc[:, which] = directions.T * enc_norm
    sae.b_enc[which] = 0.0
    for param, sl in ((sae.W_dec, (which,)), (sae.W_enc, (slice(None), which)),
                      (sae.b_enc, (which,))):
        state = opt.state.get(param, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                state[key][sl] = 0.0
    return n_dead


@torch.no_grad()
def _evaluate(sae: TopKSAE, x: torch.Tensor, batch: int = 4096
              ) -> tuple[float, float, float, float]:
    sq_err, l0, fired = 0.0, 0.0, torch.zeros(sae.n_features, dtype=torch.bool)
    for start in range(0, x.shape[0], batch):
        rows = x[start:start + batch]
        f = sae.encode(rows)
        sq_err += float(((rows - sae.decode(f)) ** 2).sum())
        active = f > 0
        l0 += float(active.sum())
        fired |= active.any(dim=0)
    total = float(((x - x.mean(dim=0)) ** 2).sum())
    ev = 1.0 - sq_err / total if total > 0 else float("nan")
    return ev, l0 / x.shape[0], 1.0 - float(fired.float().mean()), sq_err / x.numel()


def train_sae(activations: np.ndarray | torch.Tensor, *, n_features: int, k: int,
              steps: int = 2000, lr: float = 2e-3, batch_size: int = 256,
              random_state: int = 0, resample_dead_every: int = 250,
              threads: int | None = 1) -> SAETrainResult:
    """Train a :class:`TopKSAE` on activations ``(N, d)`` with Adam and an MSE loss.

    The activations are scaled so that their mean squared norm is ``d`` while training
    (the scale is folded back at the end). After every optimiser step the decoder rows are
    re-normalised, with their gradient's parallel part removed before the step. Features
    that have not fired for ``resample_dead_every`` steps are *dead*; every
    ``resample_dead_every`` steps they are re-initialised toward the residual of rows
    sampled in proportion to their squared error. The learning rate decays linearly to
    zero over the last fifth of the steps.

    Parameters
    ----------
    activations:
        ``(N, d)`` rows (tokens or pooled texts), e.g. from :func:`collect_activations`.
    n_features, k:
        Dictionary size and features kept per row.
    steps, lr, batch_size:
        Optimisation budget.
    random_state:
        Seeds initialisation, batches and resampling (a private ``torch.Generator``); the
        same seed gives the same SAE.
    resample_dead_every:
        Steps between resampling checks; ``0`` never resamples.
    threads:
        Torch threads while training (restored afterwards). A small SAE's steps are so
        short that waking a thread pool costs more than it saves, several times over on a
        busy machine; ``None`` leaves the setting alone.

    Returns
    -------
    SAETrainResult
        The SAE with its explained variance, L0 and dead fraction on all the rows.
    """
    x_raw = _activations(activations)
    n_features = checks.integer("n_features", n_features, 1)
    k = checks.integer("k", k, 1, n_features)
    steps = checks.integer("steps", steps, 1)
    batch_size = checks.integer("batch_size", batch_size, 1)
    random_state = checks.integer("random_state", random_state, 0)
    resample_dead_every = checks.integer("resample_dead_every", resample_dead_every, 0)
    if not isinstance(lr, int | float) or isinstance(lr, bool) or not (
            math.isfinite(lr) and lr > 0):
        raise InvalidInputError("lr", "must be a finite positive number", lr)
    if threads is not None:
        threads = checks.integer("threads", threads, 1)
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _train(x_raw, n_features, k, steps, float(lr), batch_size, random_state,
                      resample_dead_every)
    finally:
        if threads is not None:
            torch.set_num_threads(before)


def _train(x_raw: torch.Tensor, n_features: int, k: int, steps: int, lr: float,
           batch_size: int, random_state: int, resample_dead_every: int) -> SAETrainResult:
    n, d = x_raw.shape
    started = time.perf_counter()
    mean_sq = float((x_raw ** 2).sum(dim=1).mean())
    scale = math.sqrt(d / mean_sq) if mean_sq > 0 else 1.0
    x = x_raw * scale
    gen = torch.Generator().manual_seed(random_state)
    sae = TopKSAE(d, n_features, k, random_state=random_state)
    with torch.no_grad():
        sae.b_dec.copy_(x.mean(dim=0))
    opt = torch.optim.Adam(sae.parameters(), lr=float(lr))
    decay_from = int(0.8 * steps)
    since_fired = torch.zeros(n_features, dtype=torch.long)
    order = torch.randperm(n, generator=gen)
    cursor, n_resampled, losses = 0, 0, []
    for step in range(steps):
        if cursor + batch_size > n:
            order, cursor = torch.randperm(n, generator=gen), 0
        batch = x[order[cursor:cursor + batch_size]]
        cursor += batch_size
        for group in opt.param_groups:
            group["lr"] = float(lr) * (1.0 if step < decay_from else
                                       (steps - step) / max(steps - decay_from, 1))
        f = sae.encode(batch)
        loss = ((sae.decode(f) - batch) ** 2).sum(dim=1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        sae.remove_parallel_gradient()
        opt.step()
        sae.normalize_decoder()
        losses.append(float(loss.detach()))
        fired = (f.detach() > 0).any(dim=0)
        since_fired = torch.where(fired, torch.zeros_like(since_fired), since_fired + 1)
        if (resample_dead_every and (step + 1) % resample_dead_every == 0
                and step + 1 < decay_from):
            dead = since_fired >= resample_dead_every
            if bool(dead.any()):
                n_resampled += _resample(sae, x, dead, opt, gen, pool=16 * batch_size)
                since_fired[dead] = 0
    with torch.no_grad():  # back to the activations' own units
        sae.b_dec.div_(scale)
        sae.b_enc.div_(scale)
    sae.eval()
    ev, l0, dead_fraction, mse = _evaluate(sae, x_raw)
    params = {"n_features": n_features, "k": k, "steps": steps, "lr": float(lr),
              "batch_size": batch_size, "random_state": random_state,
              "resample_dead_every": resample_dead_every, "input_scale": scale,
              "n_rows": n, "wall_time_s": time.perf_counter() - started}
    return SAETrainResult(sae, ev, l0, dead_fraction, mse, n_resampled, tuple(losses), params)
