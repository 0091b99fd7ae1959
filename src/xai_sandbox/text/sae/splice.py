"""Reading and replacing a site's activations: collecting them, and splicing an SAE in
with its error term (through the hook sandbox's interventions)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from xai_sandbox.errors import InvalidInputError, UnsupportedModelError
from xai_sandbox.models.sandbox import Intervention, Transform, intervene
from xai_sandbox.text import checks
from xai_sandbox.text.model import TextModel
from xai_sandbox.text.sae.coder import (
    POOLS,
    POSITIONS,
    Pool,
    Positions,
    Site,
    SparseCoder,
    as_coder,
    check_site,
    coder_dtype,
)

__all__ = ["Splice", "collect_activations", "spliced"]


# ---------------------------------------------------------------------------- hooks
def _site_module(model: TextModel, layer: int, site: str) -> torch.nn.Module:
    blocks = model.blocks
    if site in ("resid_pre", "resid_post"):
        return blocks.layers[layer]
    return blocks.attn_out[layer] if site == "attn_out" else blocks.mlp_out[layer]


def at_site(model: TextModel, layer: int, site: str, fn: Transform
             ) -> AbstractContextManager[None]:
    """Call ``fn`` on the activation at a site on every forward (a returned tensor
    replaces it), through the hook sandbox: the block's input for ``resid_pre``, the
    module's output otherwise; the hook is removed on leaving, also after an exception."""
    return intervene([Intervention(_site_module(model, layer, site), fn,
                                   "input" if site == "resid_pre" else "output")])


def position_mask(mask: torch.Tensor, positions: str) -> torch.Tensor:
    """``(n, T)`` bool: the positions an SAE is applied at."""
    if positions == "all":
        return mask.bool()
    chosen = torch.zeros_like(mask, dtype=torch.bool)
    rows = torch.arange(mask.shape[0], device=mask.device)
    at = torch.zeros_like(rows) if positions == "cls" else mask.sum(dim=1) - 1
    chosen[rows, at] = True
    return chosen


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
    batch = checks.texts("texts", texts, single=True)
    check_site(model, None, layer, site)
    if pool is not None:
        checks.choice("pool", pool, POOLS)
    if not isinstance(include_special, bool):
        raise InvalidInputError("include_special", "must be True or False", include_special)
    batch_size = checks.integer("batch_size", batch_size, 1)
    captured: list[torch.Tensor] = []

    def keep(a: torch.Tensor) -> None:
        captured.append(a.detach().float().cpu())

    acts: list[np.ndarray] = []
    where: list[np.ndarray] = []
    with at_site(model, layer, site, keep), torch.no_grad():
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


def ablation_mask(ablate: Any, n_features: int) -> torch.Tensor | None:
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
                drop[r, checks.integer("features", j, 0, n_features - 1)] = True
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
    coder = as_coder(sae)
    check_site(model, coder, layer, site)
    if not isinstance(positions, torch.Tensor):
        checks.choice("positions", positions, POSITIONS)
    if not isinstance(error_term, bool):
        raise InvalidInputError("error_term", "must be True or False", error_term)
    keep = ablation_mask(ablate, coder.n_features)
    if not isinstance(feature_scale, int | float) or isinstance(feature_scale, bool) or not (
            math.isfinite(feature_scale)):
        raise InvalidInputError("feature_scale", "must be a finite number", feature_scale)
    dtype = coder_dtype(coder)
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
            where = position_mask(mask, positions)
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

    with at_site(model, layer, site, replace):
        yield record
