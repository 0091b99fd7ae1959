"""Patching a list of sites: checks, the batched engine and the one-by-one reference."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from xai_sandbox.errors import InvalidInputError
from xai_sandbox.models.accelerator import Batcher, point_bytes
from xai_sandbox.models.sandbox import Transform
from xai_sandbox.text.model import TextModel
from xai_sandbox.text.patching.pair import (
    COMPONENTS,
    POINT,
    Mode,
    Pair,
    Site,
    SiteScores,
    check_index,
    prepare,
)

__all__ = ["patch_sites"]


def _check_sites(model: TextModel, sites: Any, n_tokens: int | None) -> None:
    """Components, layers and heads; positions too once ``n_tokens`` is known."""
    blocks = model.blocks
    if not isinstance(sites, Sequence) or isinstance(sites, str):
        raise InvalidInputError("sites", "must be a sequence of Site objects", sites)
    if not sites:
        raise InvalidInputError("sites", "must name at least one site", list(sites))
    for site in sites:
        if not isinstance(site, Site) or site.component not in COMPONENTS:
            raise InvalidInputError("sites", f"must be Site objects with a component in "
                                    f"{list(COMPONENTS)}", site)
        check_index("a layer", site.layer, blocks.n_layers)
        if not isinstance(site.positions, tuple) or not site.positions:
            raise InvalidInputError("sites", "each site needs a tuple of at least one "
                                    "position", site)
        for pos in site.positions:
            check_index("a position", pos, n_tokens if n_tokens is not None else 2**62)
        is_head = site.component in ("head", "head_by_pos")
        if is_head != (site.head is not None):
            raise InvalidInputError("sites", "a head is given for the head components and "
                                    "only for them", site)
        if site.head is not None:
            check_index("a head", site.head, blocks.n_heads)


def _head_slice(site: Site, width: int, n_heads: int) -> slice:
    if site.head is None:
        return slice(None)
    size = width // n_heads
    return slice(site.head * size, (site.head + 1) * size)


# ---------------------------------------------------------------------------- engines
def _run_batched(pair: Pair, sites: Sequence[Site], batch_size: int | str
                 ) -> tuple[np.ndarray, int, int]:
    """Up to ``batch_size`` sites per forward (``"auto"``: as many as the memory budget
    holds): row ``b`` of the batch patches site ``b``; a forward that runs out of memory
    is retried with half the sites. Returns the patched metrics, the forwards and the
    largest batch."""
    n_heads = pair.model.blocks.n_heads
    patched = np.empty(len(sites))
    batcher = Batcher.for_device(pair.model.device)
    size = batch_size if isinstance(batch_size, int) else batcher.size(
        _site_bytes(pair), len(sites))

    def step(start: int, stop: int) -> None:
        chunk = sites[start:stop]
        by_point: dict[tuple[str, int], list[tuple[int, Site]]] = {}
        for row, site in enumerate(chunk):
            by_point.setdefault((POINT[site.component], site.layer), []).append((row, site))

        def overwrite(key: tuple[str, int], entries: list[tuple[int, Site]]) -> Transform:
            source = pair.source(*key)

            def transform(x: torch.Tensor) -> torch.Tensor:
                mask = torch.zeros(x.shape, dtype=torch.bool, device=x.device)
                for row, site in entries:
                    where = torch.as_tensor(site.positions, device=x.device)
                    mask[row, where, _head_slice(site, x.shape[-1], n_heads)] = True
                return torch.where(mask, source.to(x.dtype), x)
            return transform

        transforms = {key: overwrite(key, entries) for key, entries in by_point.items()}
        values = pair.forward(len(chunk), transforms)
        patched[start:stop] = values.double().cpu().numpy()

    batcher.run(len(sites), size, step)
    return patched, len(batcher.passes), max(batcher.passes, default=0)


def _site_bytes(pair: Pair) -> int:
    """What one more row of a patched forward costs: the activations a forward of the
    prompt keeps (measured once per model and prompt length; see ``point_bytes``)."""
    ids, mask = pair.base.input_ids, pair.base.attention_mask
    device = ids.device

    def probe(k: int) -> None:
        with torch.enable_grad():
            pair.model.forward(ids.expand(k, -1), mask.expand(k, -1), **pair.extra)

    width = 4 * int(ids.shape[1]) * max(1, pair.model.blocks.n_layers) * 1024
    return point_bytes(pair.model.module, ("patch", int(ids.shape[1]), str(device)), probe,
                       device, width)


def _run_one_by_one(pair: Pair, sites: Sequence[Site]) -> tuple[np.ndarray, int]:
    """One forward per site, the site's slice assigned in place (the reference engine)."""
    n_heads = pair.model.blocks.n_heads
    patched = np.empty(len(sites))
    for i, site in enumerate(sites):
        key = (POINT[site.component], site.layer)
        source = pair.source(*key)

        def transform(x: torch.Tensor, site: Site = site, source: torch.Tensor = source
                      ) -> torch.Tensor:
            x = x.clone()
            cols = _head_slice(site, x.shape[-1], n_heads)
            for pos in site.positions:
                x[:, pos, cols] = source[:, pos, cols]
            return x

        patched[i] = float(pair.forward(1, {key: transform})[0])
    return patched, len(sites)


def check_batch_size(batch_size: int | str | None) -> None:
    if batch_size is not None and batch_size != "auto" and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise InvalidInputError("batch_size", "must be a positive integer, 'auto' or None",
                                batch_size)


def run_sites(pair: Pair, sites: Sequence[Site], batch_size: int | str | None
              ) -> SiteScores:
    _check_sites(pair.model, sites, int(pair.clean.input_ids.shape[1]))
    largest: int | None = None if batch_size is None else 0
    if pair.degenerate:
        patched, forwards = np.full(len(sites), pair.m_corr), 0
    elif batch_size is None:
        patched, forwards = _run_one_by_one(pair, sites)
    else:
        patched, forwards, largest = _run_batched(pair, sites, batch_size)
    return SiteScores(tuple(sites), pair.score(patched), patched, pair.m_clean, pair.m_corr,
                      pair.degenerate, forwards, largest)


def patch_sites(model: TextModel, clean: str, corrupted: str, sites: Sequence[Site], *,
                target: int | str, foil: int | str, mode: Mode = "denoise",
                batch_size: int | str | None = "auto", add_special_tokens: bool = True,
                min_gap: float = 1e-4) -> SiteScores:
    """Patch arbitrary sites (several positions at once, say) and score each.

    Parameters
    ----------
    model, clean, corrupted, target, foil, mode:
        As in :func:`xai_sandbox.text.patching.patch`.
    sites:
        The sites; a site may span several positions (all patched in the same run).
    batch_size:
        Sites per forward pass: ``"auto"`` (as many as the memory budget holds, halved on
        an out-of-memory error), a number, or ``None`` for one forward per site with the
        reference engine of :func:`patch_one_by_one`.
    add_special_tokens:
        Passed to :meth:`TextModel.encode`.
    min_gap:
        Smallest ``|m_clean - m_corr|`` (logit units) accepted for different prompts.

    Returns
    -------
    SiteScores
        Scores and raw patched metrics in the order of ``sites``.
    """
    check_batch_size(batch_size)
    if not isinstance(model, TextModel):
        raise InvalidInputError("model", "must be a TextModel", type(model).__name__)
    _check_sites(model, sites, None)
    points = {(POINT[s.component], s.layer) for s in sites}
    pair = prepare(model, clean, corrupted, target, foil, mode, points, add_special_tokens,
                    min_gap)
    return run_sites(pair, sites, batch_size)
