"""Sparse features: TopK sparse autoencoders on a transformer's activations.

A sparse autoencoder (SAE) rewrites an activation ``a`` (one token's residual stream, say)
as a sparse, non-negative combination of learned unit directions plus a bias, and the
features it learns are the units an explanation speaks in. This module gives:

* :class:`TopKSAE` and :func:`train_sae`, a small trainer for classifiers (no public SAEs
  exist for BERT-style encoders): ``x_hat = W_dec . TopK(W_enc (x - b_dec) + b_enc) + b_dec``
  with unit-norm decoder directions, MSE loss and dead-feature resampling (Gao et al. 2024;
  Bricken et al. 2023).
* :func:`collect_activations`, which captures a block's input or output through hooks.
* :func:`spliced`, which puts an SAE into the model *with its error term*:
  ``a -> x_hat + (a - x_hat)`` leaves the model's output unchanged while exposing the feature
  activations ``f`` as a tensor that takes gradients. :func:`feature_attribution`
  attributes a target logit to each feature by gradient x activation through the splice,
  and :func:`ablate_features` checks the attribution by zero-ablating features (decoding
  without them and adding the error term back).
* :func:`load_pretrained_sae`, which loads a pretrained SAE with SAELens (the optional
  ``sae`` extra) and maps its hook to this module's sites.

Sites and Hugging Face hidden states
------------------------------------
``site="resid_pre"`` at ``layer=L`` is the *input* of block ``L``: TransformerLens's
``blocks.L.hook_resid_pre``, which is ``hidden_states[L]`` of a Hugging Face forward with
``output_hidden_states=True`` (``hidden_states[0]`` is the embedding output).
``site="resid_post"`` is the block's *output*: ``hidden_states[L + 1]``, except after the last
block of a pre-norm model (GPT-2, Llama), whose last hidden state has the final norm applied.
``"attn_out"`` and ``"mlp_out"`` are what the attention and the MLP add to the residual stream
(``hook_attn_out``, ``hook_mlp_out``).

Caveat for users: independent evaluations (MIB; Kantamneni et al. 2025) found that SAE
features often do not beat neurons or linear probes; the attributions here are checked by
ablation, which is the claim they support, and no more.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, cast

import numpy as np
import torch

from xai_sandbox.errors import InvalidInputError, InvalidTargetError, UnsupportedModelError
from xai_sandbox.explainers.explanation import Explanation
from xai_sandbox.text.model import TextModel, text_explanation

__all__ = [
    "AblationResult",
    "PretrainedSAE",
    "SAESite",
    "SAETrainResult",
    "SparseCoder",
    "Splice",
    "SpliceFidelity",
    "TopKSAE",
    "ablate_features",
    "collect_activations",
    "feature_attribution",
    "load_pretrained_sae",
    "sae_site_from_config",
    "splice_fidelity",
    "spliced",
    "train_sae",
]

Site = Literal["resid_pre", "resid_post", "attn_out", "mlp_out"]
Pool = Literal["cls", "mean", "last"]
Positions = Literal["all", "cls", "last"]

SITES: tuple[str, ...] = ("resid_pre", "resid_post", "attn_out", "mlp_out")
POOLS: tuple[str, ...] = ("cls", "mean", "last")
POSITIONS: tuple[str, ...] = ("all", "cls", "last")
SAE_EXTRA = "`pip install 'xai-sandbox[sae]'` (SAELens)"


class SparseCoder(Protocol):
    """What the splice needs of an SAE: widths, ``encode`` and ``decode``.

    :class:`TopKSAE` and :class:`PretrainedSAE` are sparse coders.
    """

    @property
    def d_in(self) -> int: ...

    @property
    def n_features(self) -> int: ...

    def encode(self, x: torch.Tensor) -> torch.Tensor: ...

    def decode(self, f: torch.Tensor) -> torch.Tensor: ...


# ---------------------------------------------------------------------------- validation
def _int(name: str, value: Any, low: int, high: int | None = None) -> int:
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < low or (
            high is not None and value > high):
        rule = f"must be an integer in [{low}, {high}]" if high is not None else (
            f"must be an integer of at least {low}")
        raise InvalidInputError(name, rule, value)
    return int(value)


def _choice(name: str, value: Any, allowed: Sequence[Any]) -> Any:
    if value not in allowed:
        raise InvalidInputError(name, f"must be one of {list(allowed)}", value)
    return value


def _coder(sae: Any) -> SparseCoder:
    for attr in ("encode", "decode"):
        if not callable(getattr(sae, attr, None)):
            raise InvalidInputError("sae", f"must have an {attr}() method (a TopKSAE or a "
                                    "PretrainedSAE)", type(sae).__name__)
    for attr in ("d_in", "n_features"):
        if not isinstance(getattr(sae, attr, None), int):
            raise InvalidInputError("sae", f"must have an integer {attr}", type(sae).__name__)
    return cast(SparseCoder, sae)


def _coder_dtype(sae: SparseCoder) -> torch.dtype:
    if isinstance(sae, torch.nn.Module):
        for p in sae.parameters():
            return p.dtype
    return torch.float32


def _check_site(model: TextModel, sae: SparseCoder | None, layer: Any, site: Any) -> None:
    if not isinstance(model, TextModel):
        raise InvalidInputError("model", "must be a TextModel", type(model).__name__)
    _choice("site", site, SITES)
    _int("layer", layer, 0, model.blocks.n_layers - 1)
    width = model.blocks.hidden_size
    if sae is not None and sae.d_in != width:
        raise InvalidInputError("sae", f"its input width must be the model's width at the "
                                f"site ({width})", sae.d_in)


# ---------------------------------------------------------------------------- the SAE
class TopKSAE(torch.nn.Module):
    """A TopK sparse autoencoder.

    ``f = ReLU(TopK_k(W_enc^T (x - b_dec) + b_enc))`` keeps the ``k`` largest
    pre-activations of each row (and only the positive ones), and
    ``x_hat = f W_dec + b_dec`` decodes it. ``W_dec`` is stored ``(n_features, d_in)`` as in
    SAELens: row ``i`` is feature ``i``'s direction (a column of the maths' ``W_dec``), kept
    at unit norm by the trainer. ``W_enc`` is ``(d_in, n_features)``.

    Parameters
    ----------
    d_in:
        Width of the activations.
    n_features:
        Number of features (the dictionary size).
    k:
        Number of features kept per row.
    random_state:
        Seed of the initial directions (random unit vectors; the encoder starts as the
        decoder's transpose).
    """

    def __init__(self, d_in: int, n_features: int, k: int, *, random_state: int = 0) -> None:
        super().__init__()
        _int("d_in", d_in, 1)
        _int("n_features", n_features, 1)
        _int("k", k, 1, n_features)
        _int("random_state", random_state, 0)
        gen = torch.Generator().manual_seed(int(random_state))
        directions = torch.randn(n_features, d_in, generator=gen)
        directions /= directions.norm(dim=1, keepdim=True).clamp_min(1e-12)
        self.W_dec = torch.nn.Parameter(directions)
        self.W_enc = torch.nn.Parameter(directions.T.clone())
        self.b_enc = torch.nn.Parameter(torch.zeros(n_features))
        self.b_dec = torch.nn.Parameter(torch.zeros(d_in))
        self.k = int(k)

    @property
    def d_in(self) -> int:
        return int(self.W_dec.shape[1])

    @property
    def n_features(self) -> int:
        return int(self.W_dec.shape[0])

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """``W_enc^T (x - b_dec) + b_enc`` over the last axis."""
        out: torch.Tensor = (x - self.b_dec) @ self.W_enc + self.b_enc
        return out

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations ``(..., n_features)``: at most ``k`` positive per row."""
        pre = self.pre_activations(x)
        values, index = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, index, torch.relu(values))

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``f W_dec + b_dec``."""
        out: torch.Tensor = f @ self.W_dec + self.b_dec
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Scale each decoder direction to unit norm."""
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))

    @torch.no_grad()
    def remove_parallel_gradient(self) -> None:
        """Drop the part of each decoder row's gradient that is parallel to the row (it
        would only change the norm, which :meth:`normalize_decoder` undoes)."""
        grad = self.W_dec.grad
        if grad is not None:
            grad -= (grad * self.W_dec).sum(dim=1, keepdim=True) * self.W_dec


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
    n_features = _int("n_features", n_features, 1)
    k = _int("k", k, 1, n_features)
    steps = _int("steps", steps, 1)
    batch_size = _int("batch_size", batch_size, 1)
    random_state = _int("random_state", random_state, 0)
    resample_dead_every = _int("resample_dead_every", resample_dead_every, 0)
    if not isinstance(lr, int | float) or isinstance(lr, bool) or not (
            math.isfinite(lr) and lr > 0):
        raise InvalidInputError("lr", "must be a finite positive number", lr)
    if threads is not None:
        threads = _int("threads", threads, 1)
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


# ---------------------------------------------------------------------------- hooks
def _site_module(model: TextModel, layer: int, site: str) -> torch.nn.Module:
    blocks = model.blocks
    if site in ("resid_pre", "resid_post"):
        return blocks.layers[layer]
    return blocks.attn_out[layer] if site == "attn_out" else blocks.mlp_out[layer]


@contextmanager
def _at_site(model: TextModel, layer: int, site: str,
             fn: Callable[[torch.Tensor], torch.Tensor | None]) -> Iterator[None]:
    """Call ``fn`` on the activation at a site on every forward (a returned tensor
    replaces it); the hook is removed on leaving, also after an exception."""
    module = _site_module(model, layer, site)
    handle: torch.utils.hooks.RemovableHandle
    if site == "resid_pre":
        def pre_hook(_: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
                     ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
            if args:
                new = fn(args[0])
                return None if new is None else ((new, *args[1:]), kwargs)
            new = fn(kwargs["hidden_states"])
            return None if new is None else (args, {**kwargs, "hidden_states": new})

        handle = module.register_forward_pre_hook(pre_hook, with_kwargs=True)
    else:
        def hook(_: torch.nn.Module, __: Any, output: Any) -> Any:
            first = output[0] if isinstance(output, tuple) else output
            new = fn(first)
            if new is None:
                return None
            return (new, *output[1:]) if isinstance(output, tuple) else new

        handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _position_mask(mask: torch.Tensor, positions: str) -> torch.Tensor:
    """``(n, T)`` bool: the positions an SAE is applied at."""
    if positions == "all":
        return mask.bool()
    chosen = torch.zeros_like(mask, dtype=torch.bool)
    rows = torch.arange(mask.shape[0], device=mask.device)
    at = torch.zeros_like(rows) if positions == "cls" else mask.sum(dim=1) - 1
    chosen[rows, at] = True
    return chosen


def _texts(texts: Any) -> list[str]:
    batch = [texts] if isinstance(texts, str) else list(texts) if isinstance(
        texts, Sequence) else None
    if not batch or not all(isinstance(t, str) and t for t in batch):
        raise InvalidInputError("texts", "must be a non-empty text or list of non-empty texts",
                                texts if batch is None else batch[:3])
    return batch


def collect_activations(model: TextModel, texts: str | Sequence[str], *, layer: int,
                        site: Site = "resid_post", pool: Pool | None = None,
                        include_special: bool = True, batch_size: int = 32
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Activations at one site of one block, captured by a hook.

    Parameters
    ----------
    model:
        The text model.
    texts:
        Texts to run.
    layer, site:
        Block index and site: ``"resid_pre"`` (block input, ``hidden_states[layer]``),
        ``"resid_post"`` (block output), ``"attn_out"`` or ``"mlp_out"``.
    pool:
        ``None`` keeps every (non-padding) token; ``"cls"`` the first token, ``"last"`` the
        last non-padding token, ``"mean"`` averages the tokens.
    include_special:
        Keep special tokens (CLS, SEP, BOS): a classifier reads its CLS token, so keep them
        for an SAE to be spliced there; leave out a causal LM's BOS, a high-norm attention
        sink, from an SAE's training data.
    batch_size:
        Texts per forward.

    Returns
    -------
    acts, token_index
        ``acts`` ``(N, d)`` float32 and ``token_index`` ``(N, 2)``: text row and position of
        each row of ``acts`` (position ``-1`` for ``pool="mean"``).
    """
    batch = _texts(texts)
    _check_site(model, None, layer, site)
    if pool is not None:
        _choice("pool", pool, POOLS)
    if not isinstance(include_special, bool):
        raise InvalidInputError("include_special", "must be True or False", include_special)
    batch_size = _int("batch_size", batch_size, 1)
    captured: list[torch.Tensor] = []

    def keep(a: torch.Tensor) -> None:
        captured.append(a.detach().float().cpu())

    acts: list[np.ndarray] = []
    where: list[np.ndarray] = []
    with _at_site(model, layer, site, keep), torch.no_grad():
        for start in range(0, len(batch), batch_size):
            enc = model.encode(batch[start:start + batch_size])
            captured.clear()
            model.forward(enc.input_ids, enc.attention_mask)
            if len(captured) != 1:
                raise UnsupportedModelError("model", "the site must run exactly once per "
                                            "forward", len(captured))
            a = captured[0].numpy()
            keep_mask = enc.attention_mask.cpu().numpy().astype(bool)
            if not include_special:
                keep_mask &= ~enc.special
            rows = np.arange(a.shape[0])
            if pool is None:
                r, t = np.nonzero(keep_mask)
                acts.append(a[r, t])
                where.append(np.stack([r + start, t], axis=1))
                continue
            if pool == "mean":
                weights = keep_mask.astype(np.float32)
                pooled = (a * weights[..., None]).sum(1) / np.maximum(weights.sum(1), 1)[:, None]
                acts.append(pooled)
                where.append(np.stack([rows + start, np.full_like(rows, -1)], axis=1))
                continue
            at = np.zeros_like(rows) if pool == "cls" else keep_mask.shape[1] - 1 - np.argmax(
                keep_mask[:, ::-1], axis=1)
            acts.append(a[rows, at])
            where.append(np.stack([rows + start, at], axis=1))
    return (np.concatenate(acts).astype(np.float32),
            np.concatenate(where).astype(np.int64))


# ---------------------------------------------------------------------------- splicing
@dataclass
class Splice:
    """What the splice saw on the last forward through it.

    ``features`` ``(n, T, n_features)`` and ``error`` ``(n, T, d)`` are leaf tensors that
    require grad (zero where the SAE was not applied); ``reconstruction`` is ``x_hat``
    with every feature kept, ``activation`` the model's own activation.
    """

    features: torch.Tensor | None = None
    error: torch.Tensor | None = None
    reconstruction: torch.Tensor | None = None
    activation: torch.Tensor | None = None
    calls: int = 0


def _ablation_mask(ablate: Any, n_features: int) -> torch.Tensor | None:
    """``None`` or a float keep-mask: ``(n_features,)`` for one feature list, ``(n, 1, F)``
    for one list per row, or a given ``(n, F)`` / ``(F,)`` bool mask of features to drop."""
    if ablate is None:
        return None
    if isinstance(ablate, torch.Tensor | np.ndarray) and np.asarray(ablate).dtype == bool:
        drop = torch.as_tensor(np.asarray(ablate))
        if drop.shape[-1] != n_features or drop.ndim not in (1, 2):
            raise InvalidInputError("features", f"a mask must be (n_features,) or (n, "
                                    f"n_features) with n_features={n_features}",
                                    tuple(drop.shape))
    else:
        if not isinstance(ablate, Sequence) and not isinstance(ablate, np.ndarray):
            raise InvalidInputError("features", "must be feature indices, one list per row, "
                                    "or a boolean mask", type(ablate).__name__)
        items = list(ablate)
        per_row = bool(items) and all(isinstance(i, Sequence | np.ndarray) for i in items)
        lists = [list(i) for i in items] if per_row else [items]
        drop = torch.zeros(len(lists), n_features, dtype=torch.bool)
        for r, row in enumerate(lists):
            for j in row:
                drop[r, _int("features", j, 0, n_features - 1)] = True
        if not per_row:
            drop = drop[0]
    if not bool(drop.any()):
        raise InvalidInputError("features", "must name at least one feature", ablate)
    keep = (~drop).float()
    return keep if keep.ndim == 1 else keep[:, None, :]


@contextmanager
def spliced(model: TextModel, sae: SparseCoder, layer: int, site: Site = "resid_post", *,
            error_term: bool = True, ablate: Any = None,
            positions: Positions | torch.Tensor = "all",
            attention_mask: torch.Tensor | None = None,
            feature_scale: float = 1.0) -> Iterator[Splice]:
    """Run the model with an SAE spliced in at a site.

    At each chosen position the activation ``a`` becomes ``decode(f') + (a - x_hat)`` with
    ``f = encode(a)``, ``x_hat = decode(f)`` and ``f'`` = ``f`` with the ``ablate`` features
    zeroed. With nothing ablated this is ``x_hat + (a - x_hat)``: the output is unchanged
    (to float rounding) while gradients reach ``f`` through the decoder. ``error_term=False``
    runs on the reconstruction alone.

    Parameters
    ----------
    model, sae, layer, site:
        Where to splice (see :func:`collect_activations` for the sites).
    error_term:
        Add the SAE's error back (exact splice) or not (pure reconstruction).
    ablate:
        Features to zero: indices for every row, one list of indices per row, or a boolean
        mask ``(n_features,)`` or ``(n, n_features)``.
    positions:
        ``"all"`` tokens, the ``"cls"`` (first) or ``"last"`` token of each row (for SAEs
        trained on pooled activations), or a bool ``(n, T)`` mask. ``"last"`` and ``"all"``
        need ``attention_mask``; without one every position counts.
    attention_mask:
        The batch's mask, to skip padding.
    feature_scale:
        Decode ``feature_scale * f`` instead of ``f`` (the error term is kept): the points
        on the path that integrated gradients over features follows; ``Splice.features``
        then holds the scaled features.

    Yields
    ------
    Splice
        Filled in on every forward through the site.
    """
    coder = _coder(sae)
    _check_site(model, coder, layer, site)
    if not isinstance(positions, torch.Tensor):
        _choice("positions", positions, POSITIONS)
    if not isinstance(error_term, bool):
        raise InvalidInputError("error_term", "must be True or False", error_term)
    keep = _ablation_mask(ablate, coder.n_features)
    if not isinstance(feature_scale, int | float) or isinstance(feature_scale, bool) or not (
            math.isfinite(feature_scale)):
        raise InvalidInputError("feature_scale", "must be a finite number", feature_scale)
    dtype = _coder_dtype(coder)
    record = Splice()

    def replace(a: torch.Tensor) -> torch.Tensor:
        n, t = a.shape[0], a.shape[1]
        if isinstance(positions, torch.Tensor):
            where = positions.to(a.device).bool()
            if where.shape != (n, t):
                raise InvalidInputError("positions", f"a mask must be (n, T) = {(n, t)}",
                                        tuple(where.shape))
        else:
            mask = (attention_mask if attention_mask is not None
                    else torch.ones(n, t, dtype=torch.long)).to(a.device)
            if mask.shape != (n, t):
                raise InvalidInputError("attention_mask", f"must be (n, T) = {(n, t)}",
                                        tuple(mask.shape))
            where = _position_mask(mask, positions)
        x = a.detach().to(dtype)
        with torch.no_grad():
            f = coder.encode(x) * where[..., None].to(dtype)
            x_hat = coder.decode(f)
            err = torch.where(where[..., None], x - x_hat, torch.zeros_like(x))
        f_leaf = (f * float(feature_scale)).requires_grad_(True)
        err_leaf = err.clone().requires_grad_(True)
        if keep is not None:
            k = keep.to(a.device, dtype)
            if k.ndim == 3 and k.shape[0] != n:
                raise InvalidInputError("features", f"needs one list per row ({n})",
                                        k.shape[0])
            f_used = f_leaf * k
        else:
            f_used = f_leaf
        new = coder.decode(f_used)
        if error_term:
            new = new + err_leaf
        new = torch.where(where[..., None], new, x)
        record.features, record.error = f_leaf, err_leaf
        record.reconstruction, record.activation = x_hat, x
        record.calls += 1
        return new.to(a.dtype)

    with _at_site(model, layer, site, replace):
        yield record


# ---------------------------------------------------------------------------- metrics
def _targets(model: TextModel, logits: torch.Tensor, mask: torch.Tensor, target: Any
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """The explained outputs ``(n, K)`` (class logits, or the last position's next-token
    logits of a causal LM) and one target index per row."""
    out = logits
    if model.kind == "causal_lm":
        last = mask.sum(dim=1) - 1
        out = logits[torch.arange(logits.shape[0], device=logits.device), last]
    n, width = out.shape
    if target is None:
        return out, out.argmax(dim=1)
    values = np.atleast_1d(np.asarray(target))
    if values.dtype.kind not in "iu" or values.ndim != 1 or len(values) not in (1, n):
        raise InvalidTargetError("target", f"must be an output index or one per row ({n})",
                                 target)
    if values.min() < 0 or values.max() >= width:
        raise InvalidTargetError("target", f"must be in [0, {width})", target)
    index = torch.as_tensor(np.broadcast_to(values, (n,)).copy(), device=out.device)
    return out, index


def _metric(out: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return out.gather(1, index[:, None]).squeeze(1)


def _attribution_pass(model: TextModel, coder: SparseCoder, enc: Any, layer: int, site: str,
                      positions: Positions, target: Any, scale: float
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                 torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """One forward and backward through the splice at ``feature_scale=scale``: outputs,
    target indices, metric, the (scaled) features and the error, and their gradients."""
    with spliced(model, coder, layer, site, positions=positions,  # type: ignore[arg-type]
                 attention_mask=enc.attention_mask, feature_scale=scale) as record:
        logits = model.forward(enc.input_ids, enc.attention_mask).logits
    out, index = _targets(model, logits, enc.attention_mask, target)
    metric = _metric(out, index)
    if record.features is None or record.error is None:
        raise UnsupportedModelError("model", "the site did not run in the forward", site)
    grad_f, grad_e = torch.autograd.grad(metric.sum(), [record.features, record.error],
                                         allow_unused=True)
    return (out.detach(), index, metric.detach(), record.features.detach(),
            record.error.detach(), grad_f, grad_e)


def feature_attribution(model: TextModel, sae: SparseCoder, texts: str | Sequence[str], *,
                        layer: int, target: int | Sequence[int] | None = None,
                        site: Site = "resid_post", positions: Positions = "all",
                        steps: int = 1, top_k: int = 5) -> Explanation:
    """Attribute a target logit to SAE features through the splice.

    The SAE is spliced in with its error term (the output is the model's own). With
    ``steps=1`` each feature's attribution at each token is gradient x activation,
    ``f * d(logit)/df`` (attribution patching). With ``steps > 1`` it is integrated
    gradients along ``alpha * f`` for ``alpha`` from 0 to 1 with the error term held
    (midpoint rule): ``f * mean_alpha d(logit)/df (alpha f)``, which sums to
    ``logit - logit(all features zeroed)`` up to the quadrature error. Use it where the
    model saturates (a tanh pooler, a confident softmax): there the gradient at ``alpha=1``
    is near zero and gradient x activation says little. ``values`` sums over the tokens.

    ``expected_value`` is the logit with every feature of the splice zeroed (error kept) and
    ``delta`` is ``sum(values) - (logit - expected_value)``. The error term's own gradient x
    activation is ``parameters["error_attribution"]``: a large one says the SAE misses what
    matters. ``parameters["token_attribution"]`` sums the features' attributions at each
    token (one list per row), a token map of where the attributed features sit.

    Parameters
    ----------
    model, sae, texts:
        The model, a :class:`SparseCoder` for the site, and the texts.
    layer, site, positions:
        Where the SAE is spliced (see :func:`spliced`).
    target:
        Class index (classifier) or next-token id at the last position (causal LM), one for
        all rows or one per row; ``None`` explains the predicted one.
    steps:
        ``1`` for gradient x activation, more for integrated gradients.
    top_k:
        Features listed per token in ``parameters["token_features"]`` (by activation) and
        per row in ``parameters["top_features"]`` (by attribution).

    Returns
    -------
    Explanation
        Method ``"sae_features"``, ``values`` ``(n, n_features)``, ``feature_names``
        ``feature_<j>``, ``prediction`` the explained outputs ``(n, K)``.
    """
    batch = _texts(texts)
    coder = _coder(sae)
    _check_site(model, coder, layer, site)
    _choice("positions", positions, POSITIONS)
    steps = _int("steps", steps, 1)
    top_k = _int("top_k", top_k, 1)
    started = time.perf_counter()
    enc = model.encode(batch)
    out, index, metric, f, err, grad_f, grad_e = _attribution_pass(
        model, coder, enc, layer, site, positions, target, 1.0)
    err_attr = (err * grad_e).sum(-1) if grad_e is not None else (
        torch.zeros(f.shape[:2], dtype=f.dtype))
    fixed = index.cpu().numpy()               # the later passes explain the same outputs
    if steps == 1:
        mean_grad = grad_f if grad_f is not None else torch.zeros_like(f)
    else:
        mean_grad = torch.zeros_like(f)
        for i in range(steps):
            *_, g, _ = _attribution_pass(model, coder, enc, layer, site, positions, fixed,
                                         (i + 0.5) / steps)
            if g is not None:
                mean_grad += g / steps
    with torch.no_grad(), spliced(model, coder, layer, site, positions=positions,
                                  attention_mask=enc.attention_mask, feature_scale=0.0):
        zeroed, _ = _targets(model, model.logits(enc.input_ids, enc.attention_mask),
                             enc.attention_mask, fixed)
    base = _metric(zeroed, index).double().cpu().numpy()
    pad = enc.attention_mask.to(f.device, f.dtype)
    per_token = f * mean_grad * pad[..., None]
    values = per_token.sum(dim=1).double().cpu().numpy()
    metric_np = metric.double().cpu().numpy()

    token_totals = per_token.sum(dim=-1).double().cpu().numpy()
    tokens, token_features, top_features, token_attribution = [], [], [], []
    for row in range(len(batch)):
        length = int(enc.attention_mask[row].sum())
        tokens.append(enc.tokens(model, row))
        token_attribution.append(token_totals[row, :length].tolist())
        listing = []
        for t in range(length):
            acts = f[row, t]
            kk = min(top_k, int((acts > 0).sum()))
            order = torch.topk(acts, kk).indices.tolist() if kk else []
            listing.append([{"feature": int(j), "activation": float(acts[j]),
                             "attribution": float(per_token[row, t, j])} for j in order])
        token_features.append(listing)
        ranked = np.argsort(-np.abs(values[row]), kind="stable")[:top_k]
        top_features.append([{"feature": int(j), "attribution": float(values[row, j])}
                             for j in ranked])
    params = {"layer": int(layer), "site": site, "positions": positions,
              "n_features": coder.n_features, "top_k": top_k, "steps": steps,
              "rule": "gradient_x_activation" if steps == 1 else "integrated_gradients",
              "error_attribution": (err_attr * pad).sum(1).double().cpu().tolist(),
              "token_attribution": token_attribution, "token_features": token_features,
              "top_features": top_features}
    explanation = text_explanation(
        model, "sae_features", values, target=fixed,
        prediction=out.double().cpu().numpy(), output_space="logit",
        parameters=params, wall_time_s=time.perf_counter() - started, tokens=tokens,
        expected_value=base, delta=values.sum(axis=1) - (metric_np - base))
    names = tuple(f"feature_{j}" for j in range(coder.n_features))
    return dataclasses.replace(explanation, feature_names=names)


@dataclass(frozen=True)
class AblationResult:
    """The target logit before and after zero-ablating features (error term kept).

    ``change = ablated - base`` per row; ``mass`` is the ablated features' summed
    activation per row (to compare ablations of matched size); ``base_class`` and
    ``ablated_class`` are the argmax outputs.
    """

    features: Any
    target: np.ndarray
    base: np.ndarray
    ablated: np.ndarray
    change: np.ndarray
    mass: np.ndarray
    base_class: np.ndarray
    ablated_class: np.ndarray

    @property
    def mean_change(self) -> float:
        return float(np.mean(self.change))

    def to_dict(self) -> dict[str, Any]:
        feats = self.features
        if isinstance(feats, np.ndarray | torch.Tensor):
            feats = np.asarray(feats).tolist()
        else:
            feats = [list(map(int, f)) if isinstance(f, Sequence | np.ndarray) else int(f)
                     for f in feats]
        return {"features": feats, "target": self.target.tolist(), "base": self.base.tolist(),
                "ablated": self.ablated.tolist(), "change": self.change.tolist(),
                "mean_change": self.mean_change, "mass": self.mass.tolist(),
                "base_class": self.base_class.tolist(),
                "ablated_class": self.ablated_class.tolist()}


def ablate_features(model: TextModel, sae: SparseCoder, texts: str | Sequence[str],
                    features: Any, *, layer: int, target: int | Sequence[int] | None = None,
                    site: Site = "resid_post", positions: Positions = "all"
                    ) -> AblationResult:
    """Zero-ablate SAE features and measure the change of the target logit.

    The activation becomes ``decode(f with the features zeroed) + (a - x_hat)``: only the
    ablated features' contribution is removed, the SAE's error stays. ``features`` are
    indices for every row, one list per row, or a boolean mask (see :func:`spliced`).
    ``target=None`` uses the unablated prediction.
    """
    batch = _texts(texts)
    coder = _coder(sae)
    _check_site(model, coder, layer, site)
    _choice("positions", positions, POSITIONS)
    keep = _ablation_mask(features, coder.n_features)
    if keep is None:
        raise InvalidInputError("features", "must name at least one feature", features)
    if keep.ndim == 3 and keep.shape[0] != len(batch):
        raise InvalidInputError("features", f"needs one list per text ({len(batch)})",
                                keep.shape[0])
    enc = model.encode(batch)
    with torch.no_grad():
        base_out, index = _targets(model, model.logits(enc.input_ids, enc.attention_mask),
                                   enc.attention_mask, target)
        with spliced(model, coder, layer, site, ablate=features, positions=positions,
                     attention_mask=enc.attention_mask) as record:
            logits = model.logits(enc.input_ids, enc.attention_mask)
        out, _ = _targets(model, logits, enc.attention_mask, target)
    if record.features is None:
        raise UnsupportedModelError("model", "the site did not run in the forward", site)
    dropped = 1.0 - keep.to(record.features.dtype)
    mass = (record.features.detach() * dropped).sum(dim=(1, 2))
    base = _metric(base_out, index).double().cpu().numpy()
    ablated = _metric(out, index).double().cpu().numpy()
    return AblationResult(features, index.cpu().numpy(), base, ablated, ablated - base,
                          mass.double().cpu().numpy(), base_out.argmax(1).cpu().numpy(),
                          out.argmax(1).cpu().numpy())


@dataclass(frozen=True)
class SpliceFidelity:
    """How faithfully the model runs with an SAE in the loop (SAELens's ``kl_div_score``
    and prediction agreement).

    ``*_spliced``: with the error term (should be exact); ``*_reconstruction``: on the
    reconstruction alone; ``kl_zero``: with the site zero-ablated, the yardstick of
    ``kl_score = 1 - kl_reconstruction / kl_zero``. KL is ``KL(p_model || p_other)`` over
    the explained outputs (all non-padding positions of a causal LM), averaged.
    """

    agreement_spliced: float
    max_abs_logit_diff_spliced: float
    agreement_reconstruction: float
    kl_reconstruction: float
    kl_zero: float
    kl_score: float
    explained_variance: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _outputs(model: TextModel, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if model.kind == "causal_lm":
        return logits[mask.bool()]
    return logits


def splice_fidelity(model: TextModel, sae: SparseCoder, texts: str | Sequence[str], *,
                    layer: int, site: Site = "resid_post", positions: Positions = "all"
                    ) -> SpliceFidelity:
    """Compare the model's outputs with the SAE spliced in (with and without its error
    term, and with the site zero-ablated)."""
    batch = _texts(texts)
    coder = _coder(sae)
    _check_site(model, coder, layer, site)
    _choice("positions", positions, POSITIONS)
    enc = model.encode(batch)
    ids, mask = enc.input_ids, enc.attention_mask

    def run(**kwargs: Any) -> tuple[torch.Tensor, Splice]:
        with spliced(model, coder, layer, site, positions=positions, attention_mask=mask,
                     **kwargs) as record:
            return _outputs(model, model.logits(ids, mask), mask).double(), record

    with torch.no_grad():
        clean = _outputs(model, model.logits(ids, mask), mask).double()
        exact, record = run()
        recon, _ = run(error_term=False)
        where = _position_mask(mask, positions)

        def zero(a: torch.Tensor) -> torch.Tensor:
            return torch.where(where[..., None], torch.zeros_like(a), a)

        with _at_site(model, layer, site, zero):
            zeroed = _outputs(model, model.logits(ids, mask), mask).double()
    logp = torch.log_softmax(clean, dim=-1)

    def kl(other: torch.Tensor) -> float:
        return float((logp.exp() * (logp - torch.log_softmax(other, dim=-1))).sum(-1).mean())

    if record.activation is None or record.reconstruction is None:
        raise UnsupportedModelError("model", "the site did not run in the forward", site)
    x = record.activation[where].double()
    x_hat = record.reconstruction[where].double()
    total = float(((x - x.mean(0)) ** 2).sum())
    ev = 1.0 - float(((x - x_hat) ** 2).sum()) / total if total > 0 else float("nan")
    kl_recon, kl_zero = kl(recon), kl(zeroed)
    return SpliceFidelity(
        agreement_spliced=float((exact.argmax(-1) == clean.argmax(-1)).double().mean()),
        max_abs_logit_diff_spliced=float((exact - clean).abs().max()),
        agreement_reconstruction=float((recon.argmax(-1) == clean.argmax(-1)).double().mean()),
        kl_reconstruction=kl_recon, kl_zero=kl_zero,
        kl_score=1.0 - kl_recon / kl_zero if kl_zero > 0 else float("nan"),
        explained_variance=ev)


# ---------------------------------------------------------------------------- SAELens
# TransformerLens centres every write to the residual stream (center_writing_weights) of
# models with LayerNorm; its activations are then the Hugging Face ones minus their mean
# over the width. RMSNorm models (Llama, Gemma, Mistral, Qwen) are left as they are.
_LAYERNORM_FAMILIES = ("gpt2", "pythia", "gpt-neo", "opt", "bloom", "tiny-stories",
                       "gelu-", "solu-", "attn-only", "distil")
_HOOK = re.compile(r"^blocks\.(\d+)\.hook_(resid_pre|resid_post|attn_out|mlp_out)$")


@dataclass(frozen=True)
class SAESite:
    """Where a pretrained SAE reads, in this module's terms, and how its inputs were made.

    Attributes
    ----------
    hook_name:
        The TransformerLens hook, e.g. ``blocks.8.hook_resid_pre``.
    layer, site:
        The same place for :func:`collect_activations` and :func:`spliced`:
        ``blocks.L.hook_resid_pre`` is ``layer=L, site="resid_pre"`` (``hidden_states[L]``).
    center:
        Subtract each activation's mean over the width before encoding (TransformerLens's
        ``center_writing_weights`` on LayerNorm models); :class:`PretrainedSAE` does it.
    prepend_bos:
        The SAE saw a BOS token first: prefix the tokenizer's BOS when the tokenizer does
        not add one (GPT-2's does not).
    context_size:
        Tokens per training sequence; positions beyond it are out of distribution.
    normalize_activations, apply_b_dec_to_input:
        SAELens's settings (applied inside its ``encode``; ``expected_average_only_in`` is
        folded into the weights when loading).
    model_name, dtype:
        The model the SAE was trained on, and the SAE's dtype.
    """

    hook_name: str
    layer: int
    site: str
    center: bool
    prepend_bos: bool | None
    context_size: int | None
    normalize_activations: str
    apply_b_dec_to_input: bool
    model_name: str | None
    dtype: str

    def collect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`collect_activations` and :func:`spliced`."""
        return {"layer": self.layer, "site": self.site}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _lookup(config: Mapping[str, Any], key: str) -> Any:
    if key in config and config[key] is not None:
        return config[key]
    metadata = config.get("metadata")
    if isinstance(metadata, Mapping):
        return metadata.get(key)
    return getattr(metadata, key, None) if metadata is not None else None


def sae_site_from_config(config: Mapping[str, Any], *, model: TextModel | None = None
                         ) -> SAESite:
    """Map an SAELens config (``cfg.to_dict()`` or the dict SAELens returns when loading)
    to an :class:`SAESite`.

    ``center`` follows TransformerLens's default processing: on when the model uses
    LayerNorm (read from ``model`` when given, else from the config's ``model_name``) unless
    ``model_from_pretrained_kwargs`` turns ``center_writing_weights`` off.
    """
    if not isinstance(config, Mapping):
        raise InvalidInputError("config", "must be a mapping (an SAELens config dict)",
                                type(config).__name__)
    hook = _lookup(config, "hook_name")
    found = _HOOK.match(str(hook)) if hook is not None else None
    if found is None:
        raise UnsupportedModelError("config", "hook_name must be blocks.L.hook_resid_pre, "
                                    "hook_resid_post, hook_attn_out or hook_mlp_out", hook)
    if _lookup(config, "hook_head_index") is not None:
        raise UnsupportedModelError("config", "SAEs on a single head are not supported",
                                    _lookup(config, "hook_head_index"))
    normalize = str(_lookup(config, "normalize_activations") or "none")
    if normalize in ("layer_norm", "constant_norm_rescale"):
        raise UnsupportedModelError("config", "per-token input normalisation (layer_norm, "
                                    "constant_norm_rescale) keeps state between SAELens's "
                                    "encode and decode; the splice cannot use it", normalize)
    kwargs = _lookup(config, "model_from_pretrained_kwargs") or {}
    model_name = _lookup(config, "model_name")
    if model is not None:
        layernorm = any(isinstance(m, torch.nn.LayerNorm)
                        for layer in model.blocks.layers for m in layer.modules())
    else:
        name = str(model_name or "").lower()
        layernorm = any(family in name for family in _LAYERNORM_FAMILIES)
    center = bool(layernorm and kwargs.get("center_writing_weights", True))
    context = _lookup(config, "context_size")
    bos = _lookup(config, "prepend_bos")
    apply_b_dec = _lookup(config, "apply_b_dec_to_input")
    return SAESite(hook_name=str(hook), layer=int(found.group(1)), site=found.group(2),
                   center=center, prepend_bos=None if bos is None else bool(bos),
                   context_size=None if context is None else int(context),
                   normalize_activations=normalize,
                   apply_b_dec_to_input=True if apply_b_dec is None else bool(apply_b_dec),
                   model_name=None if model_name is None else str(model_name),
                   dtype=str(_lookup(config, "dtype") or "float32"))


class PretrainedSAE(torch.nn.Module):
    """An SAE from another library (SAELens) with the site it reads.

    ``encode`` centres its input when ``site.center`` is set, then calls the wrapped SAE's
    ``encode``; ``decode`` calls its ``decode``. The splice's error term is taken against
    the model's own (uncentred) activation, so the splice stays exact.
    """

    def __init__(self, sae: Any, site: SAESite, *, d_in: int, n_features: int) -> None:
        super().__init__()
        if not (callable(getattr(sae, "encode", None)) and callable(getattr(sae, "decode",
                                                                            None))):
            raise InvalidInputError("sae", "must have encode() and decode()",
                                    type(sae).__name__)
        self.sae = sae
        self.site = site
        self._d_in = _int("d_in", d_in, 1)
        self._n_features = _int("n_features", n_features, 1)

    @property
    def d_in(self) -> int:
        return self._d_in

    @property
    def n_features(self) -> int:
        return self._n_features

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if self.site.center:
            x = x - x.mean(dim=-1, keepdim=True)
        out: torch.Tensor = self.sae.encode(x)
        return out

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.sae.decode(f)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def load_pretrained_sae(release: str, sae_id: str, *, model: TextModel | None = None,
                        device: str = "cpu", dtype: str = "float32") -> PretrainedSAE:
    """Load a pretrained SAE with SAELens (``pip install 'xai-sandbox[sae]'``).

    ``SAE.from_pretrained_with_cfg_and_sparsity(release, sae_id)`` loads it (downloading
    from the Hugging Face Hub unless cached); its config becomes the :class:`SAESite` of the
    returned wrapper: ``sae.site.collect_kwargs()`` gives the ``layer`` and ``site`` for
    :func:`collect_activations` and :func:`spliced`. Pass ``model`` to check the widths and
    to read whether the model uses LayerNorm (for centring).

    Example: ``load_pretrained_sae("gpt2-small-res-jb", "blocks.8.hook_resid_pre")`` reads
    ``layer=8, site="resid_pre"``, i.e. ``hidden_states[8]`` of the Hugging Face GPT-2,
    centred, with a BOS token first.
    """
    for name, value in (("release", release), ("sae_id", sae_id), ("device", device),
                        ("dtype", dtype)):
        if not isinstance(value, str) or not value:
            raise InvalidInputError(name, "must be a non-empty string", value)
    if model is not None and not isinstance(model, TextModel):
        raise InvalidInputError("model", "must be a TextModel or None", type(model).__name__)
    try:
        sae_lens = importlib.import_module("sae_lens")
    except ImportError as exc:
        raise InvalidInputError("extras", f"pretrained SAEs need {SAE_EXTRA}",
                                "sae_lens") from exc
    loader = getattr(sae_lens.SAE, "from_pretrained_with_cfg_and_sparsity", None)
    try:
        if loader is not None:
            sae, cfg, _ = loader(release, sae_id, device=device, dtype=dtype)
        else:  # SAELens < 6 returned the tuple from from_pretrained
            sae, cfg, _ = sae_lens.SAE.from_pretrained(release, sae_id, device=device)
    except ValueError as exc:
        raise InvalidInputError("sae_id", f"SAELens could not load it: {exc}",
                                f"{release}/{sae_id}") from exc
    config = dict(cfg)
    sae_cfg = getattr(sae, "cfg", None)
    if sae_cfg is not None and hasattr(sae_cfg, "to_dict"):
        config = {**sae_cfg.to_dict(), **{k: v for k, v in config.items() if v is not None}}
    site = sae_site_from_config(config, model=model)
    d_in, n_features = int(config["d_in"]), int(config["d_sae"])
    if model is not None:
        _check_site(model, None, site.layer, site.site)
        if d_in != model.blocks.hidden_size:
            raise UnsupportedModelError("model", f"the SAE reads width {d_in}; this model's "
                                        "width differs", model.blocks.hidden_size)
    return PretrainedSAE(sae, site, d_in=d_in, n_features=n_features)
