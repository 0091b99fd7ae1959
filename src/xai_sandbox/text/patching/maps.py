"""Patching maps: every (layer, position[, head]) site of some components, as a
:class:`PatchingResult` (and as an Explanation)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from xai_sandbox.errors import InvalidInputError
from xai_sandbox.explainers.explanation import Explanation, TextDetail
from xai_sandbox.text.model import TextModel, text_explanation
from xai_sandbox.text.patching.engine import check_batch_size, run_sites
from xai_sandbox.text.patching.pair import (
    COMPONENTS,
    DEFAULT_SITES,
    METHOD,
    POINT,
    SCORE,
    Component,
    Mode,
    Site,
    prepare,
)

__all__ = ["PatchingResult", "grid_sites", "patch", "patch_one_by_one"]


# ---------------------------------------------------------------------------- grids
def grid_sites(component: str, n_layers: int, n_tokens: int, n_heads: int) -> list[Site]:
    """The sites of one component's map, in row-major order of its array."""
    if component not in COMPONENTS:
        raise InvalidInputError("sites", f"must name components among {list(COMPONENTS)}",
                                component)
    every = tuple(range(n_tokens))
    if component == "head":
        return [Site("head", layer, every, head) for layer in range(n_layers)
                for head in range(n_heads)]
    if component == "head_by_pos":
        return [Site("head_by_pos", layer, (pos,), head) for layer in range(n_layers)
                for head in range(n_heads) for pos in range(n_tokens)]
    return [Site(component, layer, (pos,)) for layer in range(n_layers)  # type: ignore[arg-type]
            for pos in range(n_tokens)]


def _grid_shape(component: str, n_layers: int, n_tokens: int, n_heads: int
                ) -> tuple[int, ...]:
    if component == "head":
        return (n_layers, n_heads)
    if component == "head_by_pos":
        return (n_layers, n_heads, n_tokens)
    return (n_layers, n_tokens)


@dataclass(frozen=True)
class PatchingResult:
    """Patching maps of one clean/corrupted pair.

    Attributes
    ----------
    scores:
        Per component: ``[n_layers, T]`` for ``resid_pre``, ``resid_post``, ``attn_out`` and
        ``mlp_out``; ``[n_layers, n_heads]`` for ``head`` (each head patched at all
        positions together); ``[n_layers, n_heads, T]`` for ``head_by_pos``. 0 = nothing,
        1 = the whole difference (see the module docstring for ``mode``).
    tokens, corrupted_tokens:
        The two prompts' tokens (the map's columns).
    m_clean, m_corr:
        The metric ``logit(target) - logit(foil)`` on the clean and the corrupted prompt.
    degenerate:
        The prompts tokenise identically: every score is 0 by definition.
    n_forwards:
        Patched forward passes run (two more cache the activations).
    """

    scores: dict[str, np.ndarray]
    tokens: tuple[str, ...]
    corrupted_tokens: tuple[str, ...]
    target: int
    foil: int
    mode: Mode
    m_clean: float
    m_corr: float
    degenerate: bool
    n_forwards: int
    batch_size: int | None
    target_name: str
    foil_name: str
    wall_time_s: float

    @property
    def n_layers(self) -> int:
        return int(next(iter(self.scores.values())).shape[0])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dictionary (scores as nested lists)."""
        return {"method": METHOD, "mode": self.mode, "target": self.target,
                "foil": self.foil, "target_name": self.target_name,
                "foil_name": self.foil_name, "metric": "logit(target) - logit(foil)",
                "score": SCORE[self.mode], "m_clean": self.m_clean, "m_corr": self.m_corr,
                "degenerate": self.degenerate, "tokens": list(self.tokens),
                "corrupted_tokens": list(self.corrupted_tokens),
                "scores": {k: v.tolist() for k, v in self.scores.items()},
                "n_forwards": self.n_forwards, "batch_size": self.batch_size,
                "wall_time_s": self.wall_time_s}

    def as_explanation(self, model: TextModel, component: str = "resid_pre") -> Explanation:
        """One component's map as an :class:`Explanation`.

        ``values`` is ``(1, *map)`` (``(1, n_layers, T)`` for the position components);
        the explained output is the contrast ``m_clean`` (``prediction[0, 0]``, target 0)
        and ``expected_value`` the metric of the run that is patched into (``m_corr`` when
        denoising, ``m_clean`` when noising). Every map is in ``parameters["scores"]``.
        """
        if component not in self.scores:
            raise InvalidInputError("component", f"must be one of the patched components "
                                    f"{sorted(self.scores)}", component)
        params = {key: value for key, value in self.to_dict().items()
                  if key not in ("method", "tokens", "wall_time_s")}
        params["component"] = component
        return text_explanation(
            model, METHOD, self.scores[component][None], target=[0],
            prediction=[[self.m_clean]], output_space="contrast", parameters=params,
            wall_time_s=self.wall_time_s, tokens=[self.tokens],
            expected_value=[self.m_corr if self.mode == "denoise" else self.m_clean],
            text=TextDetail("patching", self.to_dict()))


def _output_name(model: TextModel, index: int) -> str:
    if model.kind == "classifier":
        return model.class_names[index]
    return str(model.tokenizer.convert_ids_to_tokens(index))


def _check_components(sites: Any) -> tuple[str, ...]:
    names = (sites,) if isinstance(sites, str) else tuple(sites) if isinstance(
        sites, Sequence) else None
    if not names or any(n not in COMPONENTS for n in names) or len(set(names)) != len(names):
        raise InvalidInputError("sites", f"must name distinct components among "
                                f"{list(COMPONENTS)}", sites)
    return names


def _patch(model: TextModel, clean: str, corrupted: str, target: Any, foil: Any, sites: Any,
           mode: str, batch_size: int | str | None, add_special_tokens: bool, min_gap: float
           ) -> PatchingResult:
    start = time.perf_counter()
    components = _check_components(sites)
    check_batch_size(batch_size)
    if not isinstance(model, TextModel):
        raise InvalidInputError("model", "must be a TextModel", type(model).__name__)
    blocks = model.blocks
    points = {(POINT[c], layer) for c in components for layer in range(blocks.n_layers)}
    pair = prepare(model, clean, corrupted, target, foil, mode, points, add_special_tokens,
                    min_gap)
    n_tokens = int(pair.clean.input_ids.shape[1])
    grids = {c: grid_sites(c, blocks.n_layers, n_tokens, blocks.n_heads) for c in components}
    result = run_sites(pair, [site for c in components for site in grids[c]], batch_size)
    scores, offset = {}, 0
    for c in components:
        n = len(grids[c])
        array = result.scores[offset:offset + n].reshape(
            _grid_shape(c, blocks.n_layers, n_tokens, blocks.n_heads))
        array.setflags(write=False)
        scores[c] = array
        offset += n
    return PatchingResult(
        scores, tuple(pair.clean.tokens(model)), tuple(pair.corrupted.tokens(model)),
        pair.target, pair.foil, pair.mode, result.m_clean, result.m_corr, result.degenerate,
        result.n_forwards, result.batch_size, _output_name(model, pair.target),
        _output_name(model, pair.foil), time.perf_counter() - start)


def patch(model: TextModel, clean: str, corrupted: str, *, target: int | str,
          foil: int | str, sites: Sequence[Component] | Component = DEFAULT_SITES,
          mode: Mode = "denoise", batch_size: int | str = "auto",
          add_special_tokens: bool = True, min_gap: float = 1e-4) -> PatchingResult:
    """Patch every (layer, position[, head]) site of the given components.

    Parameters
    ----------
    model:
        The model (a classifier or a causal LM).
    clean, corrupted:
        The two prompts; they must tokenise to the same number of tokens.
    target, foil:
        The clean and the corrupted answer: class indices or class names (classifier),
        token ids or one-token texts (causal LM); the metric is
        ``logit(target) - logit(foil)``, a causal LM's at the last token.
    sites:
        Components to map, among ``resid_pre``, ``resid_post``, ``attn_out``, ``mlp_out``,
        ``head`` and ``head_by_pos``.
    mode:
        ``"denoise"``: clean activations into the corrupted run, score
        ``(m_patched - m_corr) / (m_clean - m_corr)``; ``"noise"``: corrupted activations
        into the clean run, score ``(m_clean - m_patched) / (m_clean - m_corr)``.
    batch_size:
        Sites per forward pass (each row of the batch patches one site): ``"auto"`` (the
        default) takes as many as the memory budget holds (free CUDA memory, or
        ``XAI_SANDBOX_CPU_MEMORY_BUDGET_MB`` on the CPU) and halves a pass that runs out
        of memory; the result's ``batch_size`` is the largest pass that ran.
    add_special_tokens:
        Passed to :meth:`TextModel.encode`.
    min_gap:
        Smallest ``|m_clean - m_corr|`` (logit units) accepted for different prompts;
        identical prompts return all-zero scores with ``degenerate=True`` instead.

    Returns
    -------
    PatchingResult
        One map per component.

    Raises
    ------
    InvalidInputError
        Prompts of different token lengths (naming ``corrupted``), a metric gap below
        ``min_gap``, unknown components, out-of-range ``target``/``foil``.
    """
    return _patch(model, clean, corrupted, target, foil, sites, mode, batch_size,
                  add_special_tokens, min_gap)


def patch_one_by_one(model: TextModel, clean: str, corrupted: str, *, target: int | str,
                     foil: int | str, sites: Sequence[Component] | Component = DEFAULT_SITES,
                     mode: Mode = "denoise", add_special_tokens: bool = True,
                     min_gap: float = 1e-4) -> PatchingResult:
    """:func:`patch` with one forward pass per site (as TransformerLens and ROME do); the
    reference the batched engine is tested and benchmarked against."""
    return _patch(model, clean, corrupted, target, foil, sites, mode, None,
                  add_special_tokens, min_gap)
