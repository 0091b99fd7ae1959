"""Sites, the metric, the interventions at each hook point, and the clean/corrupted pair
with its cached activations."""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args

import numpy as np
import torch

from xai_sandbox.errors import InvalidInputError, InvalidTargetError, UnsupportedModelError
from xai_sandbox.models.sandbox import Intervention, Transform, intervene
from xai_sandbox.text.model import Encoded, TextModel

__all__ = ["COMPONENTS", "Site", "SiteScores", "logit_difference"]


Component = Literal["resid_pre", "resid_post", "attn_out", "mlp_out", "head", "head_by_pos"]
Mode = Literal["denoise", "noise"]
COMPONENTS: tuple[str, ...] = get_args(Component)
DEFAULT_SITES: tuple[Component, ...] = ("resid_pre", "attn_out", "mlp_out", "head")
METHOD = "activation_patching"

# Where each component is read and written: a hook point of the block.
POINT = {"resid_pre": "resid_pre", "resid_post": "resid_post", "attn_out": "attn_out",
          "mlp_out": "mlp_out", "head": "head_in", "head_by_pos": "head_in"}
_PRE_HOOK_POINTS = ("resid_pre", "head_in")      # the activation is a module's input

SCORE = {"denoise": "(m_patched - m_corr) / (m_clean - m_corr)",
          "noise": "(m_clean - m_patched) / (m_clean - m_corr)"}


@dataclass(frozen=True)
class Site:
    """One patch: ``component`` of block ``layer`` at ``positions`` (one head's slice only
    for the head components)."""

    component: Component
    layer: int
    positions: tuple[int, ...]
    head: int | None = None


@dataclass(frozen=True)
class SiteScores:
    """Scores of a list of sites (:func:`patch_sites`), in the order of the sites."""

    sites: tuple[Site, ...]
    scores: np.ndarray          # (n_sites,) normalised scores
    patched: np.ndarray         # (n_sites,) the metric of each patched run
    m_clean: float
    m_corr: float
    degenerate: bool
    n_forwards: int
    batch_size: int | None = None   # the most sites one forward held (None: one by one)


# ---------------------------------------------------------------------------- metric
def logit_difference(model: TextModel, logits: torch.Tensor, attention_mask: torch.Tensor,
                     target: int, foil: int) -> torch.Tensor:
    """``logit(target) - logit(foil)`` per row.

    For a classifier ``logits`` is ``(n, n_classes)``; for a causal LM ``(n, T, vocab)``
    and the logits are read at each row's last non-pad position (rows padded on the right),
    or ``(n, 1, vocab)`` when only the last position was kept.
    """
    if model.kind == "classifier":
        return logits[:, target] - logits[:, foil]
    if logits.shape[1] == 1:
        last = logits[:, 0]
    else:
        pos = attention_mask.long().sum(dim=1) - 1
        last = logits[torch.arange(logits.shape[0], device=logits.device), pos]
    return last[:, target] - last[:, foil]


# ---------------------------------------------------------------------------- hooks
def _module_of(model: TextModel, point: str, layer: int) -> torch.nn.Module:
    blocks = model.blocks
    table = {"resid_pre": blocks.layers, "resid_post": blocks.layers,
             "attn_out": blocks.attn_out, "mlp_out": blocks.mlp_out, "head_in": blocks.head_in}
    return table[point][layer]


def _hooked(model: TextModel, transforms: dict[tuple[str, int], Transform]
            ) -> contextlib.AbstractContextManager[None]:
    """One intervention of the hook sandbox per (point, layer): at the module's input for
    ``resid_pre`` and ``head_in``, at its output otherwise; every hook is removed on exit,
    also on error."""
    return intervene(Intervention(_module_of(model, point, layer), transform,
                                  "input" if point in _PRE_HOOK_POINTS else "output")
                     for (point, layer), transform in transforms.items())


# ---------------------------------------------------------------------------- the pair
@dataclass
class Pair:
    """The two prompts, their metrics and cached activations (``(1, T, width)`` each)."""

    model: TextModel
    clean: Encoded
    corrupted: Encoded
    target: int
    foil: int
    mode: Mode
    m_clean: float
    m_corr: float
    degenerate: bool
    extra: dict[str, Any]
    cache: dict[str, dict[tuple[str, int], torch.Tensor]] = field(default_factory=dict)

    @property
    def base(self) -> Encoded:
        """The prompt that is run and patched into."""
        return self.corrupted if self.mode == "denoise" else self.clean

    def source(self, point: str, layer: int) -> torch.Tensor:
        """The activation that is patched in."""
        return self.cache["clean" if self.mode == "denoise" else "corrupted"][(point, layer)]

    def forward(self, rows: int, transforms: dict[tuple[str, int], Transform]) -> torch.Tensor:
        ids = self.base.input_ids.expand(rows, -1)
        mask = self.base.attention_mask.expand(rows, -1)
        with torch.no_grad(), _hooked(self.model, transforms):
            out = self.model.forward(ids, mask, **self.extra)
        return logit_difference(self.model, out.logits, mask, self.target, self.foil)

    def score(self, patched: np.ndarray) -> np.ndarray:
        if self.degenerate:
            return np.zeros_like(patched)
        gap = self.m_clean - self.m_corr
        if self.mode == "denoise":
            return (patched - self.m_corr) / gap
        return (self.m_clean - patched) / gap


def check_index(what: str, value: Any, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) \
            or not 0 <= int(value) < high:
        raise InvalidInputError("sites", f"{what} must be an integer in [0, {high})", value)


def _n_outputs(model: TextModel) -> int:
    if model.kind == "classifier":
        return len(model.class_names)
    getter = getattr(model.module, "get_output_embeddings", None)
    weight = getattr(getter(), "weight", None) if callable(getter) else None
    if isinstance(weight, torch.Tensor):
        return int(weight.shape[0])
    vocab = getattr(getattr(model.module, "config", None), "vocab_size", None)
    if not isinstance(vocab, int):
        raise UnsupportedModelError("model", "a causal LM must give its vocabulary size "
                                    "(an output embedding or config.vocab_size)",
                                    type(model.module).__name__)
    return vocab


def _output_index(model: TextModel, value: Any, parameter: str) -> int:
    """A class index or class name (classifier); a token id or a one-token text (LM)."""
    if isinstance(value, str):
        if model.kind == "classifier":
            if value not in model.class_names:
                raise InvalidTargetError(parameter, f"must be a class index or one of "
                                         f"{list(model.class_names)}", value)
            return model.class_names.index(value)
        ids = model.tokenizer(value, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise InvalidTargetError(parameter, "must be a token id or a text of exactly "
                                     "one token", f"{value!r} is {len(ids)} tokens")
        return int(ids[0])
    n_out = _n_outputs(model)
    if isinstance(value, bool) or not isinstance(value, int | np.integer) \
            or not 0 <= int(value) < n_out:
        what = "class index" if model.kind == "classifier" else "token id"
        raise InvalidTargetError(parameter, f"must be a {what} in [0, {n_out})", value)
    return int(value)


def _extra_kwargs(model: TextModel) -> dict[str, Any]:
    # A causal LM needs the answer position's logits only: skip the rest of the unembedding.
    if model.kind != "causal_lm":
        return {}
    params = inspect.signature(model.module.forward).parameters
    return {"logits_to_keep": 1} if "logits_to_keep" in params else {}


def prepare(model: TextModel, clean: str, corrupted: str, target: Any, foil: Any,
             mode: str, points: set[tuple[str, int]], add_special_tokens: bool,
             min_gap: float) -> Pair:
    if not isinstance(model, TextModel):
        raise InvalidInputError("model", "must be a TextModel", type(model).__name__)
    if mode not in get_args(Mode):
        raise InvalidInputError("mode", "must be 'denoise' or 'noise'", mode)
    for name, text in (("clean", clean), ("corrupted", corrupted)):
        if not isinstance(text, str) or not text.strip():
            raise InvalidInputError(name, "must be a non-empty text", text)
    if not isinstance(min_gap, int | float) or not min_gap > 0:
        raise InvalidInputError("min_gap", "must be a positive number", min_gap)
    target = _output_index(model, target, "target")
    foil = _output_index(model, foil, "foil")
    if target == foil:
        raise InvalidTargetError("foil", "must differ from target", foil)
    enc_clean = model.encode(clean, add_special_tokens=add_special_tokens)
    enc_corr = model.encode(corrupted, add_special_tokens=add_special_tokens)
    n_clean, n_corr = enc_clean.input_ids.shape[1], enc_corr.input_ids.shape[1]
    if n_clean != n_corr:
        raise InvalidInputError(
            "corrupted", f"must have as many tokens as clean ({n_clean}; build it by "
            "swapping tokens one for one)", f"{n_corr} tokens: {enc_corr.tokens(model)}")
    extra = _extra_kwargs(model)
    pair = Pair(model, enc_clean, enc_corr, target, foil, cast(Mode, mode), 0.0, 0.0, False,
                 extra)
    metrics = {}
    for name, enc in (("clean", enc_clean), ("corrupted", enc_corr)):
        store: dict[tuple[str, int], torch.Tensor] = {}

        def keep(key: tuple[str, int], store: dict[tuple[str, int], torch.Tensor] = store
                 ) -> Transform:
            def transform(x: torch.Tensor) -> None:
                store[key] = x.detach().clone()
            return transform

        with torch.no_grad(), _hooked(model, {key: keep(key) for key in points}):
            out = model.forward(enc.input_ids, enc.attention_mask, **extra)
        pair.cache[name] = store
        metrics[name] = float(logit_difference(model, out.logits, enc.attention_mask,
                                               target, foil)[0])
    pair.m_clean, pair.m_corr = metrics["clean"], metrics["corrupted"]
    pair.degenerate = bool(torch.equal(enc_clean.input_ids, enc_corr.input_ids))
    gap = abs(pair.m_clean - pair.m_corr)
    if not pair.degenerate and gap < min_gap:
        raise InvalidInputError(
            "corrupted", f"must change the metric logit({target}) - logit({foil}): "
            f"|m_clean - m_corr| = {gap:.3g} is below min_gap = {min_gap:g}, so scores "
            "normalised by it mean nothing", corrupted)
    return pair
