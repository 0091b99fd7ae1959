"""Agreement of the cited evidence with attributions (a permutation test), and the ERASER
faithfulness scores (comprehensiveness, sufficiency, AOPC)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from xai_sandbox.errors import InvalidInputError
from xai_sandbox.text import checks
from xai_sandbox.text.selfexplain.parsing import (
    AOPC_THRESHOLDS,
    STATISTICS,
    ScoreFn,
    Span,
    W,
    WordLike,
    checked_text,
    finite_or_none,
    word_score,
    word_span,
)

__all__ = ["agreement", "aopc", "comprehensiveness", "delete_spans", "sufficiency"]


# ---------------------------------------------------------------------------- agreement
def _check_scores_mask(word_scores: Any, mask: Any) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(word_scores, dtype=np.float64)
    marks = np.asarray(mask)
    if scores.ndim != 1 or scores.size < 2 or not np.isfinite(scores).all():
        raise InvalidInputError("word_scores", "must be a 1-D array of at least two finite "
                                "scores", scores.shape)
    if marks.shape != scores.shape or marks.dtype != bool:
        raise InvalidInputError("mask", f"must be a boolean array of shape {scores.shape}",
                                f"{marks.dtype} {marks.shape}")
    if not 0 < int(marks.sum()) < marks.size:
        raise InvalidInputError("mask", "must mark at least one word and not every word",
                                int(marks.sum()))
    return scores, marks


def _statistics(scores: np.ndarray, masks: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """precision@k, recall@k and average precision of each row of ``masks`` (rows of the
    same positive count) as positives, words ranked by decreasing score. Average precision
    follows scikit-learn: tied scores form one threshold."""
    order = np.argsort(-scores, kind="stable")
    ranked = masks[:, order]
    n_pos = ranked.sum(axis=1)
    hits = ranked[:, :k].sum(axis=1)
    sorted_scores = scores[order]
    ends = np.flatnonzero(np.r_[sorted_scores[1:] != sorted_scores[:-1], True])
    tp = np.cumsum(ranked, axis=1)[:, ends]
    gain = np.diff(tp, axis=1, prepend=0) / n_pos[:, None]
    ap = (gain * tp / (ends + 1)[None, :]).sum(axis=1)
    return {"precision_at_k": hits / k, "recall_at_k": hits / n_pos, "auprc": ap}


def null_scores(scores: np.ndarray, n_pos: int, k: int, n_permutations: int,
          rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The statistics of random word sets of ``n_pos`` words (the permutation null)."""
    chosen = np.argsort(rng.random((n_permutations, scores.size)), axis=1)[:, :n_pos]
    masks = np.zeros((n_permutations, scores.size), dtype=bool)
    np.put_along_axis(masks, chosen, True, axis=1)
    return _statistics(scores, masks, k)


def permutation_test(observed: float, null: np.ndarray) -> dict[str, float | None]:
    mean, std = float(null.mean()), float(null.std())
    z = (observed - mean) / std if std > 0 else (0.0 if observed == mean else math.nan)
    return {"value": observed, "null_mean": mean, "null_std": std, "z": finite_or_none(z),
            "p_value": (1 + int((null >= observed - 1e-12).sum())) / (1 + null.size)}


def agreement(word_scores: Sequence[float] | np.ndarray, mask: Sequence[bool] | np.ndarray,
              *, k: int | None = None, n_permutations: int = 1000, random_state: int = 0
              ) -> dict[str, Any]:
    """Agreement of stated evidence (``mask``) with attribution scores, against chance.

    ``precision_at_k`` and ``recall_at_k``: the share of IG's top-``k`` words that are
    evidence, and of the evidence that is in IG's top-``k`` (``k`` defaults to the number of
    evidence words, where the two coincide); ``auprc``: average precision of the scores with
    the evidence as positives. Each is compared with ``n_permutations`` random word sets of
    the same size: ``z`` (``None`` when undefined) and a one-sided ``p_value``
    ``(1 + #{null >= observed}) / (1 + n_permutations)``.
    """
    scores, marks = _check_scores_mask(word_scores, mask)
    n_pos = int(marks.sum())
    top = n_pos if k is None else checks.integer("k", k, 1)
    if top > scores.size:
        raise InvalidInputError("k", f"must be at most the number of words ({scores.size})",
                                top)
    n_perm = checks.integer("n_permutations", n_permutations, 20)
    observed = _statistics(scores, marks[None], top)
    null = null_scores(scores, n_pos, top, n_perm, np.random.default_rng(random_state))
    out: dict[str, Any] = {"k": top, "n_words": int(scores.size), "n_evidence": n_pos,
                           "n_permutations": n_perm, "random_state": random_state,
                           "ranking": "signed scores, decreasing; ties by position"}
    for name in STATISTICS:
        out[name] = permutation_test(float(observed[name][0]), null[name])
    return out


# ---------------------------------------------------------------------------- ERASER
def delete_spans(text: str, spans: Sequence[Span]) -> str:
    """``text`` with the character spans deleted, each with one adjoining whitespace run
    (the following one, or the preceding one at the end of the text)."""
    cuts: list[Span] = []
    for s, e in sorted(spans):
        while e < len(text) and text[e].isspace():
            e += 1
        if e == len(text):
            while s > 0 and text[s - 1].isspace():
                s -= 1
        if cuts and s <= cuts[-1][1]:
            cuts[-1] = (cuts[-1][0], max(e, cuts[-1][1]))
        else:
            cuts.append((s, e))
    pieces, last = [], 0
    for s, e in cuts:
        pieces.append(text[last:s])
        last = e
    pieces.append(text[last:])
    return "".join(pieces)


def word_spans(words: Sequence[WordLike]) -> list[Span]:
    if isinstance(words, str) or not isinstance(words, Sequence):
        raise InvalidInputError("words", "must be a list of words", words)
    return [word_span(w) for w in words]


def comprehensiveness(score_fn: ScoreFn, text: str, words_to_remove: Sequence[WordLike]
                      ) -> float:
    """ERASER comprehensiveness ``p(y|x) - p(y|x without r)`` (higher: the rationale
    mattered). ``score_fn(text, erased_spans)`` is ``p(y)`` with the spans removed."""
    checked_text("text", text)
    return float(score_fn(text, ())) - float(score_fn(text, word_spans(words_to_remove)))


def sufficiency(score_fn: ScoreFn, text: str, rationale: Sequence[WordLike],
                words: Sequence[WordLike]) -> float:
    """ERASER sufficiency ``p(y|x) - p(y|r only)`` (lower: the rationale alone suffices):
    every word of ``words`` that does not overlap the rationale is removed."""
    checked_text("text", text)
    keep = word_spans(rationale)
    erase = [(s, e) for s, e in word_spans(words) if not any(a < e and s < b for a, b in keep)]
    return float(score_fn(text, ())) - float(score_fn(text, erase))


def top_words(words: Sequence[W], scores: np.ndarray, k: int) -> list[W]:
    """The ``k`` words of highest score (ties by position), in text order."""
    order = np.argsort(-scores, kind="stable")[:k]
    return [words[int(i)] for i in sorted(order)]


def aopc(score_fn: ScoreFn, text: str, words: Sequence[WordLike],
         scores: Sequence[float] | np.ndarray | None = None, *,
         thresholds: Sequence[float] = AOPC_THRESHOLDS) -> dict[str, Any]:
    """AOPC: comprehensiveness and sufficiency averaged over rationales made of the top
    ``thresholds`` shares of words by score (``ceil(share * n)``, at least one word)."""
    checked_text("text", text)
    ranked = np.asarray([word_score(w) for w in words] if scores is None else scores,
                        dtype=np.float64)
    if ranked.ndim != 1 or ranked.size != len(words) or not ranked.size:
        raise InvalidInputError("scores", f"must give one score per word ({len(words)})",
                                ranked.shape)
    shares = list(thresholds)
    if not shares or not all(isinstance(t, int | float) and 0 < t <= 1 for t in shares):
        raise InvalidInputError("thresholds", "must be shares in (0, 1]", shares)
    comp, suff, ks = [], [], []
    for share in shares:
        k = max(1, math.ceil(share * len(words) - 1e-9))
        rationale = top_words(words, ranked, k)
        ks.append(k)
        comp.append(comprehensiveness(score_fn, text, rationale))
        suff.append(sufficiency(score_fn, text, rationale, words))
    return {"thresholds": shares, "k": ks, "comprehensiveness": comp, "sufficiency": suff,
            "aopc_comprehensiveness": float(np.mean(comp)),
            "aopc_sufficiency": float(np.mean(suff))}
