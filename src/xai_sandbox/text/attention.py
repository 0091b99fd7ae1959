"""Raw attention and attention rollout (Abnar & Zuidema 2020) for transformer text models.

Raw attention is what each head of each layer reads: ``A[l, h, q, k]``, the weight query
position ``q`` gives key position ``k``. It says where one layer looks, not what the input
tokens contributed to the output, because every layer mixes positions that earlier layers
have already mixed. *Attention rollout* follows the mixing through the layers: with the
heads averaged, ``Ā_l = mean_h A_l``, and the residual connection modelled as half of each
layer's mixing, ``Â_l = rownorm(Ā_l + I) = 0.5·Ā_l + 0.5·I``, the rollout is::

    R_1 = Â_1,        R_l = Â_l · R_{l-1}

and row ``q`` of ``R_L`` is the share of position ``q``'s final representation that came
from each input token. For a classifier the relevant row is the one the pooler reads (the
CLS position); for a causal LM it is the last real position, the one that predicts the next
token. In a causal model a position can only draw on the tokens before it, so rollout piles
up on the first tokens whatever the model does; the paper's remedy, "normalise by the
receptive field", is ``R / R_uniform``, with ``R_uniform`` the rollout of uniform causal
attention of the same length and depth (values above 1 mean more than a uniform reader).

Padding is excluded: each example is sliced to its real tokens before anything is rolled
out, so a text gives the same rollout alone or in a padded batch. Attention weights come
back only from eager attention: load models with ``attn_implementation="eager"``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from xai_sandbox.errors import InvalidInputError, UnsupportedModelError
from xai_sandbox.explainers.explanation import Explanation
from xai_sandbox.text.model import TextModel, text_explanation

__all__ = [
    "AttentionMaps",
    "HeadReduce",
    "attention_rollout",
    "attention_stack",
    "attentions",
    "raw_attention",
    "rollout",
    "uniform_rollout",
]

HeadReduce = Literal["mean", "max", "min"]
_HEAD_REDUCE = ("mean", "max", "min")
# Rows of a float32 softmax sum to 1 within ~1e-6, of a bfloat16 one within a few 1e-3; each
# rollout step renormalises its rows, so the tolerance only has to catch what is not
# attention at all (scores before the softmax, say).
_ROW_TOLERANCE = 1e-2


@dataclass(frozen=True)
class AttentionMaps:
    """Raw attention weights of a batch, each example sliced to its real (non-pad) tokens.

    Attributes
    ----------
    maps:
        One array per example of shape ``(n_layers, n_heads, T_i, T_i)``:
        ``maps[i][l, h, q, k]`` is the weight that query position ``q`` gives key position
        ``k`` in head ``h`` of layer ``l``. Read-only.
    tokens:
        The ``T_i`` tokens of each example (special tokens included).
    texts:
        The input texts.
    causal:
        Whether the model is a causal LM (no position attends to a later one).
    model_id:
        The explained model's ``model_id``.
    """

    maps: tuple[np.ndarray, ...]
    tokens: tuple[tuple[str, ...], ...]
    texts: tuple[str, ...]
    causal: bool
    model_id: str = "text-model"

    def __post_init__(self) -> None:
        frozen = []
        for array in self.maps:
            as_array = np.asarray(array)
            dtype = np.float32 if as_array.dtype == np.float32 else np.float64
            copy = np.array(as_array, dtype=dtype, copy=True)
            copy.setflags(write=False)
            frozen.append(copy)
        object.__setattr__(self, "maps", tuple(frozen))
        object.__setattr__(self, "tokens", tuple(tuple(map(str, t)) for t in self.tokens))
        object.__setattr__(self, "texts", tuple(self.texts))
        if not self.maps or len(self.tokens) != len(self.maps) or len(self.texts) != len(
                self.maps):
            raise InvalidInputError("maps", "needs one map, one token list and one text per "
                                    "example (at least one example)",
                                    (len(self.maps), len(self.tokens), len(self.texts)))
        for i, (array, toks) in enumerate(zip(self.maps, self.tokens, strict=True)):
            _check_stack(array, f"maps[{i}]")
            if array.shape[-1] != len(toks) or array.shape[:2] != self.maps[0].shape[:2]:
                raise InvalidInputError(
                    f"maps[{i}]", f"must be (n_layers, n_heads, T, T) with the batch's layers "
                    f"and heads {self.maps[0].shape[:2]} and T = {len(toks)} tokens",
                    array.shape)

    @property
    def n_examples(self) -> int:
        return len(self.maps)

    @property
    def n_layers(self) -> int:
        return int(self.maps[0].shape[0])

    @property
    def n_heads(self) -> int:
        return int(self.maps[0].shape[1])

    @property
    def lengths(self) -> tuple[int, ...]:
        return tuple(int(m.shape[-1]) for m in self.maps)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dictionary (the maps as nested lists)."""
        return {"model_id": self.model_id, "causal": self.causal,
                "n_layers": self.n_layers, "n_heads": self.n_heads,
                "texts": list(self.texts), "tokens": [list(t) for t in self.tokens],
                "maps": [m.tolist() for m in self.maps]}


# ---------------------------------------------------------------------- validation
def _check_stack(stack: np.ndarray, parameter: str) -> None:
    """An ``(L, H, T, T)`` stack of attention weights: finite, non-negative, rows sum to 1."""
    if stack.ndim != 4 or stack.shape[-1] != stack.shape[-2] or 0 in stack.shape:
        raise InvalidInputError(parameter, "must be attention weights of shape "
                                "(n_layers, n_heads, T, T) with no empty axis", stack.shape)
    if not np.isfinite(stack).all():
        raise InvalidInputError(parameter, "must be finite (no NaN or infinity)",
                                "non-finite values")
    if (stack < 0).any():
        raise InvalidInputError(parameter, "must be non-negative (attention weights)",
                                float(stack.min()))
    sums = stack.sum(axis=-1)
    worst = float(np.abs(sums - 1.0).max())
    if worst > _ROW_TOLERANCE:
        raise InvalidInputError(parameter, f"every row must sum to 1 (softmax weights; "
                                f"tolerance {_ROW_TOLERANCE})", f"a row off by {worst:.3g}")


def _is_causal(stack: np.ndarray) -> bool:
    return bool(np.all(np.triu(stack, k=1) <= 1e-9))


def attention_stack(attention: AttentionMaps | np.ndarray | torch.Tensor, example: int = 0
                    ) -> tuple[np.ndarray, bool | None]:
    """The ``(L, H, T, T)`` stack of one example (validated), and the causality the maps
    declare (``None`` for a bare array)."""
    if isinstance(attention, AttentionMaps):
        if not -attention.n_examples <= example < attention.n_examples:
            raise InvalidInputError("example", f"must index one of the "
                                    f"{attention.n_examples} examples", example)
        return np.asarray(attention.maps[example], dtype=np.float64), attention.causal
    if isinstance(attention, torch.Tensor):
        attention = attention.detach().cpu().numpy()
    if not isinstance(attention, np.ndarray):
        raise InvalidInputError("attention", "must be AttentionMaps or an array of shape "
                                "(n_layers, n_heads, T, T)", type(attention).__name__)
    stack = np.asarray(attention, dtype=np.float64)
    _check_stack(stack, "attention")
    return stack, None


def _check_options(head_reduce: str, residual: float) -> None:
    if head_reduce not in _HEAD_REDUCE:
        raise InvalidInputError("head_reduce", f"must be one of {list(_HEAD_REDUCE)}",
                                head_reduce)
    if isinstance(residual, bool) or not isinstance(residual, int | float) or not (
            0.0 <= float(residual) <= 1.0):
        raise InvalidInputError("residual", "must be a number in [0, 1] (the weight of the "
                                "identity: 0.5 is the paper's 0.5·A + 0.5·I)", residual)


def _check_layers(layers: int | None, n_layers: int, parameter: str = "layers") -> int:
    if layers is None:
        return n_layers
    if isinstance(layers, bool) or not isinstance(layers, int) or not 1 <= layers <= n_layers:
        raise InvalidInputError(parameter, f"must be an int in [1, {n_layers}] (how many "
                                "layers to roll out)", layers)
    return layers


# ---------------------------------------------------------------------- rollout
def _reduce_heads(stack: np.ndarray, head_reduce: str) -> np.ndarray:
    if head_reduce == "max":
        return np.asarray(stack.max(axis=1))
    if head_reduce == "min":
        return np.asarray(stack.min(axis=1))
    return np.asarray(stack.mean(axis=1))


def _roll(per_layer: np.ndarray, residual: float) -> np.ndarray:
    """``R_1 = Â_1, R_l = Â_l R_{l-1}`` with ``Â_l = rownorm((1 - r)·Ā_l + r·I)``."""
    eye = np.eye(per_layer.shape[-1])
    result = eye
    for mixing in per_layer:
        mixed = (1.0 - residual) * mixing + residual * eye
        sums = mixed.sum(axis=-1, keepdims=True)
        if (sums <= 0).any():
            raise InvalidInputError("attention", "with residual=0 and head_reduce 'min' a "
                                    "row of attention is all zero and cannot be normalised",
                                    "a zero row")
        result = (mixed / sums) @ result
    return result


def _drop_first_column(matrix: np.ndarray) -> np.ndarray:
    """Zero column 0 (BOS / attention sink) and renormalise each non-zero row."""
    out = matrix.copy()
    out[:, 0] = 0.0
    sums = out.sum(axis=-1, keepdims=True)
    return np.asarray(np.divide(out, sums, out=np.zeros_like(out), where=sums > 0))


def uniform_rollout(length: int, n_layers: int, *, residual: float = 0.5,
                    causal: bool = True) -> np.ndarray:
    """The rollout of uniform attention: the reference for receptive-field normalisation.

    Every head of every layer spreads its weight evenly over the positions it can see (all
    ``length`` positions, or positions ``0..q`` when ``causal``).

    Parameters
    ----------
    length:
        Number of tokens ``T``.
    n_layers:
        Depth of the rollout.
    residual:
        Weight of the identity in each layer, as in :func:`rollout`.
    causal:
        Whether position ``q`` sees only positions up to ``q``.

    Returns
    -------
    numpy.ndarray
        ``(T, T)``, rows summing to 1.
    """
    for name, value in (("length", length), ("n_layers", n_layers)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidInputError(name, "must be a positive int", value)
    _check_options("mean", residual)
    visible = np.tril(np.ones((length, length))) if causal else np.ones((length, length))
    uniform = visible / visible.sum(axis=-1, keepdims=True)
    return _roll(np.repeat(uniform[None], n_layers, axis=0), float(residual))


def rollout(attention: AttentionMaps | np.ndarray | torch.Tensor, *, example: int = 0,
            head_reduce: HeadReduce = "mean", residual: float = 0.5,
            causal: bool | None = None, layers: int | None = None,
            normalise: bool = False, drop_sink: bool = False) -> np.ndarray:
    """Attention rollout of one example (Abnar & Zuidema 2020, Eq. 1).

    ``Ā_l = reduce_h A_l``; ``Â_l = rownorm((1 - residual)·Ā_l + residual·I)``, which with
    the default ``residual=0.5`` is ``rownorm(Ā_l + I)``; ``R_1 = Â_1``,
    ``R_l = Â_l · R_{l-1}``.

    Parameters
    ----------
    attention:
        :class:`AttentionMaps` (then ``example`` picks the example) or one example's
        attention weights, an array or tensor ``(n_layers, n_heads, T, T)`` whose rows sum
        to 1.
    example:
        Which example of ``AttentionMaps`` to roll out.
    head_reduce:
        How heads are combined: ``"mean"`` (the paper), ``"max"`` or ``"min"``.
    residual:
        Weight of the identity (the residual connection), in ``[0, 1]``.
    causal:
        Whether the model is causal, which picks the uniform reference of ``normalise``.
        ``None``: as ``AttentionMaps`` says, or for an array whether no position attends
        to a later one; ``True`` is refused for maps that attend to later positions.
    layers:
        Roll out only the first ``layers`` layers (all by default).
    normalise:
        Return ``R / R_uniform`` (the receptive-field normalisation the paper advises for
        decoders) instead of ``R``: 1 means the share a uniform reader would give.
    drop_sink:
        Zero the first column (BOS / attention sink) and renormalise each row over the
        other tokens before any normalisation; row 0 becomes all zero.

    Returns
    -------
    numpy.ndarray
        ``(T, T)``: row ``q`` is the share of position ``q``'s output drawn from each input
        token. Rows sum to 1, except with ``normalise`` (ratios to the uniform reader) and
        row 0 with ``drop_sink`` (all zero).
    """
    stack, declared = attention_stack(attention, example)
    _check_options(head_reduce, residual)
    depth = _check_layers(layers, stack.shape[0])
    if causal is None:
        causal = declared if declared is not None else _is_causal(stack)
    elif causal and not _is_causal(stack):
        raise InvalidInputError("causal", "is True but the attention gives weight to later "
                                "positions", causal)
    result = _roll(_reduce_heads(stack[:depth], head_reduce), float(residual))
    if not normalise:
        return _drop_first_column(result) if drop_sink else result
    reference = uniform_rollout(stack.shape[-1], depth, residual=float(residual),
                                causal=bool(causal))
    if drop_sink:
        result, reference = _drop_first_column(result), _drop_first_column(reference)
    return np.asarray(np.divide(result, reference, out=np.zeros_like(result),
                                where=reference > 0))


# ---------------------------------------------------------------------- model side
def _forward(model: TextModel, texts: str | Sequence[str]
             ) -> tuple[AttentionMaps, torch.Tensor, list[np.ndarray]]:
    """One eager forward: the maps sliced to the real tokens, the logits, and each row's
    real positions in the padded batch."""
    if not isinstance(model, TextModel):
        raise InvalidInputError("model", "must be a TextModel", type(model).__name__)
    encoded = model.encode(texts)
    with torch.no_grad():
        out = model.forward(encoded.input_ids, encoded.attention_mask,
                            output_attentions=True)
    layers = getattr(out, "attentions", None)
    if not layers or any(a is None for a in layers):
        raise UnsupportedModelError(
            "model", "returned no attention weights (SDPA and flash attention do not); load "
            "it with attn_implementation='eager'", type(model.module).__name__)
    # (n, L, H, T, T); float32 keeps a long prompt's maps at half the size of float64.
    stacked = torch.stack([a.detach().float().cpu() for a in layers], dim=1).numpy()
    mask = encoded.attention_mask.bool().cpu().numpy()
    real = [np.flatnonzero(row) for row in mask]
    maps = tuple(stacked[i][:, :, idx][:, :, :, idx] for i, idx in enumerate(real))
    tokens = tuple(tuple(encoded.tokens(model, i)) for i in range(len(real)))
    result = AttentionMaps(maps, tokens, encoded.texts, model.kind == "causal_lm",
                           model.model_id)
    return result, out.logits.detach(), real


def attentions(model: TextModel, texts: str | Sequence[str]) -> AttentionMaps:
    """Raw attention of every layer and head, each example sliced to its real tokens.

    Parameters
    ----------
    model:
        A :class:`TextModel` loaded with eager attention.
    texts:
        A text or a list of texts (padded together; padding is sliced away).

    Returns
    -------
    AttentionMaps
        ``maps[i]`` of shape ``(n_layers, n_heads, T_i, T_i)``.

    Raises
    ------
    UnsupportedModelError
        If the model returns no attention weights (SDPA or flash attention).
    """
    return _forward(model, texts)[0]


def _positions(position: int | None, lengths: Sequence[int], causal: bool) -> list[int]:
    """The explained row of each example: the CLS position of an encoder, the last real
    position of a causal LM, or ``position`` (negative counts back from the last real)."""
    if position is None:
        return [n - 1 if causal else 0 for n in lengths]
    if isinstance(position, bool) or not isinstance(position, int):
        raise InvalidInputError("position", "must be an int or None", position)
    shortest = min(lengths)
    if not -shortest <= position < shortest:
        raise InvalidInputError("position", f"must index a real token of every text, in "
                                f"[{-shortest}, {shortest}) (the shortest text has "
                                f"{shortest} tokens)", position)
    return [position % n for n in lengths]


def _token_map(model: TextModel, texts: str | Sequence[str], method: str,
               position: int | None, row_of: Callable[[np.ndarray, int], np.ndarray],
               parameters: dict[str, Any],
               extra: Callable[[np.ndarray, int], np.ndarray] | None = None) -> Explanation:
    """Shared by the two explanations: one row per example, padded with 0."""
    start = time.perf_counter()
    maps, logits, real = _forward(model, texts)
    lengths = list(maps.lengths)
    positions = _positions(position, lengths, maps.causal)
    values = np.zeros((maps.n_examples, max(lengths)))
    extras: list[list[float]] = []
    for i, (stack, pos) in enumerate(zip(maps.maps, positions, strict=True)):
        values[i, : lengths[i]] = row_of(stack, pos)
        if extra is not None:
            extras.append([float(v) for v in extra(stack, pos)])
    params: dict[str, Any] = dict(parameters, position=positions, lengths=lengths,
                                  n_layers=maps.n_layers, n_heads=maps.n_heads,
                                  causal=maps.causal)
    if maps.causal:
        # The next-token distribution at each explained position (in the padded batch).
        at = [int(idx[pos]) for idx, pos in zip(real, positions, strict=True)]
        rows = torch.arange(len(at))
        probs = torch.softmax(logits[rows, torch.as_tensor(at)].double().cpu(), dim=-1)
        top = probs.argmax(dim=-1)
        prediction = probs[rows, top].numpy()[:, None]
        target = np.zeros(len(positions), dtype=np.int64)
        params["next_token_id"] = [int(t) for t in top]
        params["next_token"] = [str(t) for t in model.tokenizer.convert_ids_to_tokens(
            top.tolist())]
        if extra is not None:
            params["normalised"] = extras
    else:
        prediction = torch.softmax(logits.double().cpu(), dim=-1).numpy()
        target = prediction.argmax(axis=1)
    return text_explanation(model, method, values, target=target, prediction=prediction,
                            output_space="probability", parameters=params,
                            wall_time_s=time.perf_counter() - start, tokens=maps.tokens)


def attention_rollout(model: TextModel, texts: str | Sequence[str], *,
                      position: int | None = None, head_reduce: HeadReduce = "mean",
                      residual: float = 0.5, drop_sink: bool = False) -> Explanation:
    """Relevance of each input token by attention rollout, as an ``Explanation``.

    ``values[i, k]`` is the rollout weight of token ``k`` in the explained row of example
    ``i``: the CLS position (0) of an encoder classifier, the last real position of a causal
    LM, or ``position``. Rows are padded with 0 beyond each text's length
    (``parameters["lengths"]``); tokens are in ``parameters["tokens"]``.

    For a causal LM, ``parameters["normalised"]`` also holds each row divided by the
    rollout of uniform causal attention (see :func:`uniform_rollout`); ``prediction`` is the
    probability of the most likely next token (``parameters["next_token"]``) and ``target``
    is 0. For a classifier, ``prediction`` is the class probabilities and ``target`` the
    predicted class (rollout does not depend on the class).

    Parameters
    ----------
    model:
        A :class:`TextModel` loaded with eager attention.
    texts:
        A text or a list of texts.
    position:
        Explained row; ``None`` for the model's default, a negative int counts back from
        each text's last real token.
    head_reduce, residual, drop_sink:
        As in :func:`rollout`.
    """
    _check_options(head_reduce, residual)

    def row_of(stack: np.ndarray, pos: int) -> np.ndarray:
        return np.asarray(rollout(stack, head_reduce=head_reduce, residual=residual,
                                  drop_sink=drop_sink)[pos])

    def normalised(stack: np.ndarray, pos: int) -> np.ndarray:
        return np.asarray(rollout(stack, head_reduce=head_reduce, residual=residual,
                                  causal=True, normalise=True, drop_sink=drop_sink)[pos])

    return _token_map(model, texts, "attention_rollout", position, row_of,
                      {"head_reduce": head_reduce, "residual": float(residual),
                       "drop_sink": bool(drop_sink)},
                      extra=normalised if model.kind == "causal_lm" else None)


def raw_attention(model: TextModel, texts: str | Sequence[str], *, layer: int = -1,
                  position: int | None = None, head_reduce: HeadReduce = "mean"
                  ) -> Explanation:
    """Head-reduced raw attention of one layer from the explained row, as an
    ``Explanation`` laid out like :func:`attention_rollout`'s, to compare the two.

    Parameters
    ----------
    model, texts, position:
        As in :func:`attention_rollout`.
    layer:
        Which layer (negative counts from the last).
    head_reduce:
        ``"mean"``, ``"max"`` or ``"min"`` over heads.
    """
    _check_options(head_reduce, 0.5)
    n_layers = model.blocks.n_layers
    if isinstance(layer, bool) or not isinstance(layer, int) or not (
            -n_layers <= layer < n_layers):
        raise InvalidInputError("layer", f"must be an int in [{-n_layers}, {n_layers})",
                                layer)

    def row_of(stack: np.ndarray, pos: int) -> np.ndarray:
        return np.asarray(_reduce_heads(stack[layer][None], head_reduce)[0, pos])

    return _token_map(model, texts, "raw_attention", position, row_of,
                      {"layer": layer % n_layers, "head_reduce": head_reduce})
