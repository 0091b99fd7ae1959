"""Activation patching (causal mediation) between a clean and a corrupted prompt.

The clean prompt gives the answer ``target``; the corrupted one, built by symmetric token
replacement (swap one name, keyword or value) and of the same token length, pushes the model
towards ``foil``. The metric is the logit difference ``m = logit(target) - logit(foil)``: a
classifier's two class logits, or a causal LM's two next-token logits at the answer
position (the last non-pad token). Every *site* - a component of one block at some
positions, optionally one attention head - is then patched:

* ``mode="denoise"`` runs the corrupted prompt with the site set to its clean value and
  scores ``(m_patched - m_corr) / (m_clean - m_corr)``: 0 means the site restores nothing,
  1 that it alone restores the clean answer (*sufficiency*);
* ``mode="noise"`` runs the clean prompt with the site set to its corrupted value and
  scores ``(m_clean - m_patched) / (m_clean - m_corr)``: the fraction of the clean-minus-
  corrupted gap that corrupting the site destroys; 0 means the model does not need the
  site, 1 that corrupting it alone gives the corrupted answer (*necessity*).

Both are normalised so that 0 and 1 are the two prompts' own metrics, and 1 always means
"this site carries the difference". They are not clipped: a site can overshoot (above 1) or
push the other way (below 0), and that is worth seeing.

Components (per block ``l``; ``model.blocks`` says which module each one is):

``resid_pre``   the residual stream entering block ``l`` (a forward pre-hook on the block;
                its hidden states come as the first positional argument or as the
                ``hidden_states`` keyword - both are handled);
``resid_post``  the residual stream leaving block ``l`` (its output);
``attn_out``    what the attention adds, the output of ``blocks.attn_out[l]``;
``mlp_out``     what the MLP adds, the output of ``blocks.mlp_out[l]``;
``head``        one head's slice of the *input* of ``blocks.head_in[l]`` (the attention's
                output projection), patched at all positions at once (TransformerLens's
                ``attn_head_out_all_pos``): a ``[n_layers, n_heads]`` map;
``head_by_pos`` the same per position: ``[n_layers, n_heads, T]``.

The position components give ``[n_layers, T]`` maps. Sites are patched many at a time: the
base prompt is repeated ``batch_size`` times and row ``b`` of the batch gets site ``b``, so
a forward pass handles up to ``batch_size`` sites (TransformerLens and ROME run one forward
per site; :func:`patch_one_by_one` does that too and is the oracle of the tests).

Identical clean and corrupted token ids are *degenerate*: no activation differs, so no patch
can change anything; every score is 0 by definition and ``degenerate`` is set. Different
prompts whose metrics nearly coincide (``|m_clean - m_corr| < min_gap``) make the
normalisation meaningless and raise :class:`InvalidInputError` naming ``corrupted``.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args

import numpy as np
import torch

from xai_sandbox.errors import InvalidInputError, InvalidTargetError, UnsupportedModelError
from xai_sandbox.explainers.explanation import Explanation
from xai_sandbox.text.model import Encoded, TextModel, text_explanation

__all__ = [
    "COMPONENTS",
    "PatchingResult",
    "Site",
    "SiteScores",
    "grid_sites",
    "logit_difference",
    "patch",
    "patch_one_by_one",
    "patch_sites",
    "patching_map_png",
]

Component = Literal["resid_pre", "resid_post", "attn_out", "mlp_out", "head", "head_by_pos"]
Mode = Literal["denoise", "noise"]
COMPONENTS: tuple[str, ...] = get_args(Component)
DEFAULT_SITES: tuple[Component, ...] = ("resid_pre", "attn_out", "mlp_out", "head")
METHOD = "activation_patching"

# Where each component is read and written: a hook point of the block.
_POINT = {"resid_pre": "resid_pre", "resid_post": "resid_post", "attn_out": "attn_out",
          "mlp_out": "mlp_out", "head": "head_in", "head_by_pos": "head_in"}
_PRE_HOOK_POINTS = ("resid_pre", "head_in")      # the activation is a module's input

_SCORE = {"denoise": "(m_patched - m_corr) / (m_clean - m_corr)",
          "noise": "(m_clean - m_patched) / (m_clean - m_corr)"}

Transform = Callable[[torch.Tensor], torch.Tensor | None]


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
def _hidden_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    if args and isinstance(args[0], torch.Tensor):
        return args[0]
    for name in ("hidden_states", "input", "x"):
        value = kwargs.get(name)
        if isinstance(value, torch.Tensor):
            return value
    raise InvalidInputError("model", "a block or output projection must receive its hidden "
                            "states as the first argument or as 'hidden_states'",
                            sorted(kwargs))


def _pre_hook(transform: Transform) -> Callable[..., Any]:
    def hook(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
             ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        new = transform(_hidden_of(args, kwargs))
        if new is None:
            return None
        if args and isinstance(args[0], torch.Tensor):
            return (new, *args[1:]), kwargs
        name = next(k for k in ("hidden_states", "input", "x")
                    if isinstance(kwargs.get(k), torch.Tensor))
        return args, {**kwargs, name: new}
    return hook


def _post_hook(transform: Transform) -> Callable[..., Any]:
    def hook(module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        first = output[0] if isinstance(output, tuple) else output
        new = transform(first)
        if new is None:
            return None
        return (new, *output[1:]) if isinstance(output, tuple) else new
    return hook


def _module_of(model: TextModel, point: str, layer: int) -> torch.nn.Module:
    blocks = model.blocks
    table = {"resid_pre": blocks.layers, "resid_post": blocks.layers,
             "attn_out": blocks.attn_out, "mlp_out": blocks.mlp_out, "head_in": blocks.head_in}
    return table[point][layer]


@contextlib.contextmanager
def _hooked(model: TextModel, transforms: dict[tuple[str, int], Transform]) -> Iterator[None]:
    """Register one hook per (point, layer); every hook is removed on exit, also on error."""
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        for (point, layer), transform in transforms.items():
            module = _module_of(model, point, layer)
            if point in _PRE_HOOK_POINTS:
                handles.append(module.register_forward_pre_hook(_pre_hook(transform),
                                                                with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(_post_hook(transform)))
        yield
    finally:
        for handle in handles:
            handle.remove()


# ---------------------------------------------------------------------------- the pair
@dataclass
class _Pair:
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


def _check_index(what: str, value: Any, high: int) -> None:
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


def _prepare(model: TextModel, clean: str, corrupted: str, target: Any, foil: Any,
             mode: str, points: set[tuple[str, int]], add_special_tokens: bool,
             min_gap: float) -> _Pair:
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
    pair = _Pair(model, enc_clean, enc_corr, target, foil, cast(Mode, mode), 0.0, 0.0, False,
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
        _check_index("a layer", site.layer, blocks.n_layers)
        if not isinstance(site.positions, tuple) or not site.positions:
            raise InvalidInputError("sites", "each site needs a tuple of at least one "
                                    "position", site)
        for pos in site.positions:
            _check_index("a position", pos, n_tokens if n_tokens is not None else 2**62)
        is_head = site.component in ("head", "head_by_pos")
        if is_head != (site.head is not None):
            raise InvalidInputError("sites", "a head is given for the head components and "
                                    "only for them", site)
        if site.head is not None:
            _check_index("a head", site.head, blocks.n_heads)


def _head_slice(site: Site, width: int, n_heads: int) -> slice:
    if site.head is None:
        return slice(None)
    size = width // n_heads
    return slice(site.head * size, (site.head + 1) * size)


# ---------------------------------------------------------------------------- engines
def _run_batched(pair: _Pair, sites: Sequence[Site], batch_size: int) -> tuple[np.ndarray, int]:
    """Up to ``batch_size`` sites per forward: row ``b`` of the batch patches site ``b``."""
    n_heads = pair.model.blocks.n_heads
    patched = np.empty(len(sites))
    forwards = 0
    for start in range(0, len(sites), batch_size):
        chunk = sites[start:start + batch_size]
        by_point: dict[tuple[str, int], list[tuple[int, Site]]] = {}
        for row, site in enumerate(chunk):
            by_point.setdefault((_POINT[site.component], site.layer), []).append((row, site))

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
        patched[start:start + len(chunk)] = values.double().cpu().numpy()
        forwards += 1
    return patched, forwards


def _run_one_by_one(pair: _Pair, sites: Sequence[Site]) -> tuple[np.ndarray, int]:
    """One forward per site, the site's slice assigned in place (the reference engine)."""
    n_heads = pair.model.blocks.n_heads
    patched = np.empty(len(sites))
    for i, site in enumerate(sites):
        key = (_POINT[site.component], site.layer)
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


def _check_batch_size(batch_size: int | None) -> None:
    if batch_size is not None and (isinstance(batch_size, bool)
                                   or not isinstance(batch_size, int) or batch_size < 1):
        raise InvalidInputError("batch_size", "must be a positive integer", batch_size)


def _run(pair: _Pair, sites: Sequence[Site], batch_size: int | None) -> SiteScores:
    _check_sites(pair.model, sites, int(pair.clean.input_ids.shape[1]))
    if pair.degenerate:
        patched, forwards = np.full(len(sites), pair.m_corr), 0
    elif batch_size is None:
        patched, forwards = _run_one_by_one(pair, sites)
    else:
        patched, forwards = _run_batched(pair, sites, batch_size)
    return SiteScores(tuple(sites), pair.score(patched), patched, pair.m_clean, pair.m_corr,
                      pair.degenerate, forwards)


def patch_sites(model: TextModel, clean: str, corrupted: str, sites: Sequence[Site], *,
                target: int | str, foil: int | str, mode: Mode = "denoise",
                batch_size: int | None = 32, add_special_tokens: bool = True,
                min_gap: float = 1e-4) -> SiteScores:
    """Patch arbitrary sites (several positions at once, say) and score each.

    Parameters
    ----------
    model:
        The model (a classifier or a causal LM).
    clean, corrupted:
        The two prompts; they must tokenise to the same number of tokens.
    sites:
        The sites; a site may span several positions (all patched in the same run).
    target, foil:
        The clean and the corrupted answer: class indices or class names (classifier),
        token ids or one-token texts (causal LM); the metric is
        ``logit(target) - logit(foil)``.
    mode:
        ``"denoise"`` (clean values into the corrupted run) or ``"noise"`` (corrupted values
        into the clean run); see the module docstring for the two scores.
    batch_size:
        Sites per forward pass; ``None`` runs one forward per site with the reference engine
        of :func:`patch_one_by_one`.
    add_special_tokens:
        Passed to :meth:`TextModel.encode`.
    min_gap:
        Smallest ``|m_clean - m_corr|`` (logit units) accepted for different prompts.

    Returns
    -------
    SiteScores
        Scores and raw patched metrics in the order of ``sites``.
    """
    _check_batch_size(batch_size)
    if not isinstance(model, TextModel):
        raise InvalidInputError("model", "must be a TextModel", type(model).__name__)
    _check_sites(model, sites, None)
    points = {(_POINT[s.component], s.layer) for s in sites}
    pair = _prepare(model, clean, corrupted, target, foil, mode, points, add_special_tokens,
                    min_gap)
    return _run(pair, sites, batch_size)


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
                "score": _SCORE[self.mode], "m_clean": self.m_clean, "m_corr": self.m_corr,
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
            expected_value=[self.m_corr if self.mode == "denoise" else self.m_clean])


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
           mode: str, batch_size: int | None, add_special_tokens: bool, min_gap: float
           ) -> PatchingResult:
    start = time.perf_counter()
    components = _check_components(sites)
    _check_batch_size(batch_size)
    if not isinstance(model, TextModel):
        raise InvalidInputError("model", "must be a TextModel", type(model).__name__)
    blocks = model.blocks
    points = {(_POINT[c], layer) for c in components for layer in range(blocks.n_layers)}
    pair = _prepare(model, clean, corrupted, target, foil, mode, points, add_special_tokens,
                    min_gap)
    n_tokens = int(pair.clean.input_ids.shape[1])
    grids = {c: grid_sites(c, blocks.n_layers, n_tokens, blocks.n_heads) for c in components}
    result = _run(pair, [site for c in components for site in grids[c]], batch_size)
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
        result.n_forwards, batch_size, _output_name(model, pair.target),
        _output_name(model, pair.foil), time.perf_counter() - start)


def patch(model: TextModel, clean: str, corrupted: str, *, target: int | str,
          foil: int | str, sites: Sequence[Component] | Component = DEFAULT_SITES,
          mode: Mode = "denoise", batch_size: int = 32, add_special_tokens: bool = True,
          min_gap: float = 1e-4) -> PatchingResult:
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
        Sites per forward pass (each row of the batch patches one site).
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


# ---------------------------------------------------------------------------- rendering
def patching_map_png(result: PatchingResult, component: str = "resid_pre") -> bytes:
    """A heatmap of one component's map (layers down, tokens or heads across) as PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not isinstance(result, PatchingResult):
        raise InvalidInputError("result", "must be a PatchingResult", type(result).__name__)
    if component not in result.scores:
        raise InvalidInputError("component", f"must be one of the patched components "
                                f"{sorted(result.scores)}", component)
    data = result.scores[component]
    if data.ndim == 3:                       # head_by_pos: rows are (layer, head)
        data = data.reshape(-1, data.shape[-1])
    columns = list(result.tokens) if data.shape[1] == len(result.tokens) and \
        component != "head" else [f"H{h}" for h in range(data.shape[1])]
    rows = ([f"L{layer}" for layer in range(result.n_layers)] if component != "head_by_pos"
            else [f"L{layer}H{h}" for layer in range(result.n_layers)
                  for h in range(data.shape[0] // result.n_layers)])
    fig = Figure(figsize=(max(4.0, 0.5 * len(columns) + 2), max(2.5, 0.3 * len(rows) + 1.5)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    limit = max(1.0, float(np.nanmax(np.abs(data))) if data.size else 1.0)
    image = ax.imshow(data, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(len(columns)), columns, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_xlabel("head" if component == "head" else "token")
    ax.set_ylabel("layer, head" if component == "head_by_pos" else "layer")
    ax.set_title(f"{component} ({result.mode}): m_clean {result.m_clean:.2f}, "
                 f"m_corr {result.m_corr:.2f}", fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()
