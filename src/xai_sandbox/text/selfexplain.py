"""Self-explanation consistency: does what a model *says* decided its answer agree with
what the gradients and the removal tests say did?

The model is asked for an **answer-first JSON** self-explanation (LLM.md 2.6)::

    {"label": "<one of the labels>", "evidence": ["<exact quotes of the input>"],
     "confidence": <number in [0, 1]>}

and the answer is checked in four independent ways.

1. **Format** (:func:`parse_self_explanation`): the first JSON object in the raw answer is
   validated with pydantic against :data:`SELF_EXPLANATION_SCHEMA` plus the label set. A
   parse or schema failure gives ``valid=False`` with the reason; nothing is retried, and the
   caller counts the failure rate (:func:`summarise`). Extra keys are ignored; the label
   must match one of the labels exactly (case included); each quote is stripped of
   surrounding whitespace; duplicate quotes count once.
2. **Grounding**: each quote is searched for verbatim (case-sensitive) in the input; a
   quote found is mapped to the character spans of **all** its occurrences (a quote does
   not say which occurrence it means, so all are treated as stated evidence); a quote not
   found is **hallucinated** evidence and is counted as its own inconsistency rate.
3. **Agreement with integrated gradients** (:func:`agreement`): IG of the stated label's
   score (a classifier's logit; a causal LM's ``log p(label tokens | prompt)``) with respect
   to the **input-text tokens only** (instruction and template tokens are left out), summed
   into the whitespace-separated words of the input; precision@k and recall@k of the
   evidence words among IG's top-k words (signed scores: evidence claims support for the
   answer; ties broken by position), and AUPRC of the IG scores with the evidence words as
   positives, each against a permutation null of random word sets of the same size.
4. **Faithfulness without treating IG as the truth** (ERASER, DeYoung et al. 2020, and
   Madsen et al. 2024): comprehensiveness ``p(y|x) - p(y|x without r)`` and sufficiency
   ``p(y|x) - p(y|r only)`` of the stated evidence and of IG's top-k words at the same k,
   AOPC over IG's top 1/5/10/20/50 % of words, and **redaction**: the evidence words are
   deleted from the input, the model is asked again, and a change of label is recorded.

How a removed word is represented changes the numbers (ERASER), so it is fixed here and
reported in every result (``removal``):

- **classifier**: the removed words' tokens are replaced by the tokenizer's PAD token and
  the length is kept (the same PAD that is the IG baseline);
- **causal LM**: the removed words are **deleted** from the input text (with one adjoining
  run of whitespace) and the prompt is rebuilt and re-tokenised; ``p(y|x)`` is the
  probability of the label's tokens after the answer prefix ``{"label": "``, renormalised
  over the label set.

Redaction (re-asking) always deletes the words from the text, since the re-asked prompt
holds text; ``y`` is the label the model *stated*, the decision being explained.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from xai_sandbox.errors import InvalidInputError, UnsupportedModelError
from xai_sandbox.explainers.explanation import Explanation
from xai_sandbox.text.attribution import Word, generation_attributions, token_attributions
from xai_sandbox.text.model import Encoded, TextModel, text_explanation

__all__ = [
    "ANSWER_PREFILL",
    "AOPC_THRESHOLDS",
    "SELF_EXPLANATION_SCHEMA",
    "LabelScorer",
    "Redaction",
    "SelfExplanation",
    "SelfExplanationPrompt",
    "SelfExplanationReport",
    "agreement",
    "aopc",
    "build_prompt",
    "check_self_explanation",
    "comprehensiveness",
    "constrained_answerer",
    "delete_spans",
    "evidence_mask",
    "greedy_answerer",
    "parse_rate",
    "parse_self_explanation",
    "self_explanation_schema",
    "sufficiency",
    "summarise",
]

METHOD = "self_explanation"
ANSWER_PREFILL = '{"label": "'
AOPC_THRESHOLDS = (0.01, 0.05, 0.1, 0.2, 0.5)
_STATISTICS = ("precision_at_k", "recall_at_k", "auprc")

SELF_EXPLANATION_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "SelfExplanation",
    "type": "object",
    "properties": {
        "label": {"type": "string", "description": "one of the allowed labels, exactly"},
        "evidence": {"type": "array", "minItems": 1,
                     "items": {"type": "string", "minLength": 1},
                     "description": "exact substrings of the input that decided the label"},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
    },
    "required": ["label", "evidence", "confidence"],
}

Span = tuple[int, int]
ScoreFn = Callable[[str, Sequence[Span]], float]
Answerer = Callable[[str], str]
WordLike = Word | Mapping[str, Any]
_W = TypeVar("_W")


def self_explanation_schema(labels: Sequence[str]) -> dict[str, Any]:
    """:data:`SELF_EXPLANATION_SCHEMA` with the label restricted to ``labels``."""
    names = _labels(labels)
    schema = json.loads(json.dumps(SELF_EXPLANATION_SCHEMA))
    schema["properties"]["label"]["enum"] = list(names)
    out: dict[str, Any] = schema
    return out


# ---------------------------------------------------------------------------- validation
def _labels(labels: Any) -> tuple[str, ...]:
    if isinstance(labels, str) or not isinstance(labels, Sequence) or len(labels) < 2:
        raise InvalidInputError("labels", "must be a list of at least two labels", labels)
    if not all(isinstance(x, str) and x.strip() and x == x.strip() for x in labels):
        raise InvalidInputError("labels", "every label must be a non-empty string with no "
                                "surrounding whitespace", list(labels))
    if len(set(labels)) != len(labels):
        raise InvalidInputError("labels", "must be distinct", list(labels))
    return tuple(labels)


def _text(name: str, text: Any, *, empty: bool = False) -> str:
    if not isinstance(text, str) or (not empty and not text.strip()):
        raise InvalidInputError(name, "must be a non-empty text", text)
    return text


def _int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise InvalidInputError(name, f"must be an integer >= {minimum}", value)
    return int(value)


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


# ---------------------------------------------------------------------------- parsing
class _Answer(BaseModel):
    """The schema of a self-explanation (pydantic, strict types: a number must be a JSON
    number, not a string; ``true`` is not a number)."""

    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False)

    label: str
    evidence: list[Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]] = (
        Field(min_length=1))
    confidence: float = Field(ge=0.0, le=1.0)

    @field_validator("label")
    @classmethod
    def _known(cls, value: str, info: ValidationInfo) -> str:
        labels = tuple((info.context or {}).get("labels", ()))
        if value not in labels:
            raise ValueError(f"must be one of {list(labels)}")
        return value


@dataclass(frozen=True)
class SelfExplanation:
    """A parsed self-explanation.

    ``valid`` is False when no JSON object could be read or it breaks the schema;
    ``reason`` says why. ``spans`` are the character spans in the input of every occurrence
    of every quote found verbatim (``found``); ``hallucinated`` are the quotes not found.
    ``answer_first`` records whether ``label`` was the object's first key.
    """

    valid: bool
    raw: str
    reason: str | None = None
    label: str | None = None
    evidence: tuple[str, ...] = ()
    confidence: float | None = None
    spans: tuple[Span, ...] = ()
    found: tuple[str, ...] = ()
    hallucinated: tuple[str, ...] = ()
    answer_first: bool | None = None

    @property
    def hallucination_rate(self) -> float | None:
        """Share of the (distinct) quotes not found in the input."""
        return len(self.hallucinated) / len(self.evidence) if self.evidence else None

    def to_dict(self) -> dict[str, Any]:
        return {"valid": self.valid, "raw": self.raw, "reason": self.reason,
                "label": self.label, "evidence": list(self.evidence),
                "confidence": self.confidence, "spans": [list(s) for s in self.spans],
                "found": list(self.found), "hallucinated": list(self.hallucinated),
                "hallucination_rate": self.hallucination_rate,
                "answer_first": self.answer_first}


def _first_json_object(raw: str) -> tuple[dict[str, Any] | None, str | None]:
    """The first ``{...}`` in ``raw`` that decodes to a JSON object, or the reason none
    does (prose and code fences around it are allowed)."""
    decoder = json.JSONDecoder()
    first_error: str | None = None
    for match in re.finditer(r"\{", raw):
        try:
            obj, _ = decoder.raw_decode(raw, match.start())
        except json.JSONDecodeError as exc:
            first_error = first_error or f"malformed JSON: {exc}"
            continue
        if isinstance(obj, dict):
            return obj, None
    return None, first_error or "no JSON object in the answer"


def _occurrences(text: str, quote: str) -> list[Span]:
    spans, start = [], text.find(quote)
    while start >= 0:
        spans.append((start, start + len(quote)))
        start = text.find(quote, start + len(quote))
    return spans


def parse_self_explanation(raw: str, text: str, labels: Sequence[str]) -> SelfExplanation:
    """Read and check a model's raw self-explanation of its answer about ``text``.

    Parameters
    ----------
    raw:
        The model's answer; the first JSON object in it is read.
    text:
        The input the model was asked about (the quotes must be substrings of it).
    labels:
        The allowed labels.

    Returns
    -------
    SelfExplanation
        ``valid=False`` with ``reason`` on a parse or schema failure (never retried);
        otherwise the label, the distinct quotes, the confidence, the character spans of
        every occurrence of each quote found verbatim, and the hallucinated quotes.
    """
    if not isinstance(raw, str):
        raise InvalidInputError("raw", "must be a string (the model's answer)", raw)
    _text("text", text)
    names = _labels(labels)
    obj, problem = _first_json_object(raw)
    if obj is None:
        return SelfExplanation(valid=False, raw=raw, reason=problem)
    try:
        answer = _Answer.model_validate(obj, context={"labels": names})
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'answer'}: {err['msg']}"
            for err in exc.errors())
        return SelfExplanation(valid=False, raw=raw, reason=f"schema: {details}")
    quotes = tuple(dict.fromkeys(answer.evidence))
    spans: list[Span] = []
    found: list[str] = []
    hallucinated: list[str] = []
    for quote in quotes:
        where = _occurrences(text, quote)
        (found if where else hallucinated).append(quote)
        spans.extend(where)
    return SelfExplanation(
        valid=True, raw=raw, label=answer.label, evidence=quotes,
        confidence=float(answer.confidence), spans=tuple(sorted(set(spans))),
        found=tuple(found), hallucinated=tuple(hallucinated),
        answer_first=next(iter(obj)) == "label")


# ---------------------------------------------------------------------------- words
def _span(word: WordLike) -> Span:
    if isinstance(word, Word):
        return word.start, word.end
    if isinstance(word, Mapping) and "start" in word and "end" in word:
        return int(word["start"]), int(word["end"])
    raise InvalidInputError("words", "each word must be a Word or a mapping with 'start' and "
                            "'end'", word)


def _score(word: WordLike) -> float:
    value = word.score if isinstance(word, Word) else word.get("score")
    if value is None:
        raise InvalidInputError("words", "each word needs a 'score'", word)
    return float(value)


def evidence_mask(words: Sequence[WordLike], spans: Sequence[Span]) -> np.ndarray:
    """Which words are stated evidence: a word is evidence when its character span
    overlaps a stated span (so a quote of part of a word marks the whole word)."""
    if isinstance(words, str) or not isinstance(words, Sequence):
        raise InvalidInputError("words", "must be a list of words", words)
    stated = []
    for span in spans:
        if (not isinstance(span, Sequence) or len(span) != 2
                or not all(isinstance(v, int | np.integer) for v in span) or span[1] < span[0]):
            raise InvalidInputError("spans", "each span must be a (start, end) pair of "
                                    "integers with start <= end", span)
        stated.append((int(span[0]), int(span[1])))
    mask = np.zeros(len(words), dtype=bool)
    for i, word in enumerate(words):
        s, e = _span(word)
        mask[i] = any(a < e and s < b for a, b in stated)
    return mask


def _text_words(text: str, encoded: Encoded, token_scores: np.ndarray, start: int
                ) -> list[dict[str, Any]]:
    """The whitespace-separated words of ``text`` (which sits at character ``start`` of
    the encoded string), each with the tokens that spell it and their summed score.

    A token belongs to the word holding its first non-space character inside the text;
    tokens wholly outside the text (instructions, template, special tokens) are left out.
    Grouping by the text's own whitespace, rather than by gaps between token offsets, keeps
    byte-level BPE tokens (whose offsets include the leading space) in their words.
    """
    spans = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
    starts = np.array([s for s, _ in spans])
    owned: list[list[int]] = [[] for _ in spans]
    end = start + len(text)
    for pos in range(encoded.input_ids.shape[1]):
        if encoded.special[0, pos]:
            continue
        s, e = (int(v) for v in encoded.offsets[0, pos])
        s, e = max(s, start), min(e, end)
        piece = text[s - start:e - start] if e > s else ""
        if not piece.strip():
            continue
        first = s - start + (len(piece) - len(piece.lstrip()))
        word = int(np.searchsorted(starts, first, side="right")) - 1
        if word >= 0 and first < spans[word][1]:
            owned[word].append(pos)
    scores = np.asarray(token_scores, dtype=np.float64).ravel()
    return [{"text": text[s:e], "start": s, "end": e, "tokens": tokens,
             "score": float(scores[tokens].sum())}
            for (s, e), tokens in zip(spans, owned, strict=True) if tokens]


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


def _null(scores: np.ndarray, n_pos: int, k: int, n_permutations: int,
          rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The statistics of random word sets of ``n_pos`` words (the permutation null)."""
    chosen = np.argsort(rng.random((n_permutations, scores.size)), axis=1)[:, :n_pos]
    masks = np.zeros((n_permutations, scores.size), dtype=bool)
    np.put_along_axis(masks, chosen, True, axis=1)
    return _statistics(scores, masks, k)


def _test(observed: float, null: np.ndarray) -> dict[str, float | None]:
    mean, std = float(null.mean()), float(null.std())
    z = (observed - mean) / std if std > 0 else (0.0 if observed == mean else math.nan)
    return {"value": observed, "null_mean": mean, "null_std": std, "z": _finite(z),
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
    top = n_pos if k is None else _int("k", k, 1)
    if top > scores.size:
        raise InvalidInputError("k", f"must be at most the number of words ({scores.size})",
                                top)
    n_perm = _int("n_permutations", n_permutations, 20)
    observed = _statistics(scores, marks[None], top)
    null = _null(scores, n_pos, top, n_perm, np.random.default_rng(random_state))
    out: dict[str, Any] = {"k": top, "n_words": int(scores.size), "n_evidence": n_pos,
                           "n_permutations": n_perm, "random_state": random_state,
                           "ranking": "signed scores, decreasing; ties by position"}
    for name in _STATISTICS:
        out[name] = _test(float(observed[name][0]), null[name])
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


def _spans(words: Sequence[WordLike]) -> list[Span]:
    if isinstance(words, str) or not isinstance(words, Sequence):
        raise InvalidInputError("words", "must be a list of words", words)
    return [_span(w) for w in words]


def comprehensiveness(score_fn: ScoreFn, text: str, words_to_remove: Sequence[WordLike]
                      ) -> float:
    """ERASER comprehensiveness ``p(y|x) - p(y|x without r)`` (higher: the rationale
    mattered). ``score_fn(text, erased_spans)`` is ``p(y)`` with the spans removed."""
    _text("text", text)
    return float(score_fn(text, ())) - float(score_fn(text, _spans(words_to_remove)))


def sufficiency(score_fn: ScoreFn, text: str, rationale: Sequence[WordLike],
                words: Sequence[WordLike]) -> float:
    """ERASER sufficiency ``p(y|x) - p(y|r only)`` (lower: the rationale alone suffices):
    every word of ``words`` that does not overlap the rationale is removed."""
    _text("text", text)
    keep = _spans(rationale)
    erase = [(s, e) for s, e in _spans(words) if not any(a < e and s < b for a, b in keep)]
    return float(score_fn(text, ())) - float(score_fn(text, erase))


def _top(words: Sequence[_W], scores: np.ndarray, k: int) -> list[_W]:
    """The ``k`` words of highest score (ties by position), in text order."""
    order = np.argsort(-scores, kind="stable")[:k]
    return [words[int(i)] for i in sorted(order)]


def aopc(score_fn: ScoreFn, text: str, words: Sequence[WordLike],
         scores: Sequence[float] | np.ndarray | None = None, *,
         thresholds: Sequence[float] = AOPC_THRESHOLDS) -> dict[str, Any]:
    """AOPC: comprehensiveness and sufficiency averaged over rationales made of the top
    ``thresholds`` shares of words by score (``ceil(share * n)``, at least one word)."""
    _text("text", text)
    ranked = np.asarray([_score(w) for w in words] if scores is None else scores,
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
        rationale = _top(words, ranked, k)
        ks.append(k)
        comp.append(comprehensiveness(score_fn, text, rationale))
        suff.append(sufficiency(score_fn, text, rationale, words))
    return {"thresholds": shares, "k": ks, "comprehensiveness": comp, "sufficiency": suff,
            "aopc_comprehensiveness": float(np.mean(comp)),
            "aopc_sufficiency": float(np.mean(suff))}


# ---------------------------------------------------------------------------- prompts
@dataclass(frozen=True)
class SelfExplanationPrompt:
    """The prompt, and where the input text sits in it (character ``start``)."""

    prompt: str
    text: str
    start: int
    labels: tuple[str, ...]


_INSTRUCTION = (
    "Classify the text between <text> and </text> as one of: {labels}.\n"
    "Answer with one JSON object only, label first: "
    '{{"label": "...", "evidence": ["..."], "confidence": 0.0}}\n'
    '"evidence" lists up to three short phrases of the text that decided the label, '
    'each copied exactly; "confidence" is a number from 0 to 1.\n\n'
    "<text>\n{text}\n</text>")


def build_prompt(model: TextModel | None, text: str, labels: Sequence[str]
                 ) -> SelfExplanationPrompt:
    """The answer-first JSON prompt, through the tokenizer's chat template when it has one
    (a single user turn, then the assistant's turn opened)."""
    _text("text", text, empty=True)
    names = _labels(labels)
    user = _INSTRUCTION.format(labels=", ".join(f'"{x}"' for x in names), text=text)
    template = getattr(getattr(model, "tokenizer", None), "chat_template", None)
    if model is not None and template:
        prompt = str(model.tokenizer.apply_chat_template(
            [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True))
    else:
        prompt = user + "\n"
    block = f"<text>\n{text}\n</text>"
    where = prompt.rfind(block)
    if where < 0:
        raise UnsupportedModelError("model", "its chat template must keep the user's text "
                                    "verbatim", type(model.tokenizer).__name__
                                    if model is not None else None)
    return SelfExplanationPrompt(prompt, text, where + len("<text>\n"), names)


def greedy_answerer(model: TextModel, *, max_new_tokens: int = 96,
                    prefill: str = ANSWER_PREFILL) -> Answerer:
    """A causal LM's greedy answer to a prompt: ``prefill`` is appended to the prompt (it
    forces the label first) and returned in front of the continuation. Generation stops
    at the end-of-sequence token, once a whole JSON object has been written, or after
    ``max_new_tokens``."""
    if model.kind != "causal_lm":
        raise UnsupportedModelError("model", "greedy answers need a causal LM; pass "
                                    "answer= for a classifier", model.kind)
    limit = _int("max_new_tokens", max_new_tokens, 1)
    if not isinstance(prefill, str):
        raise InvalidInputError("prefill", "must be a string", prefill)

    def answer(prompt: str) -> str:
        ids = model.encode(prompt + prefill).input_ids
        eos = model.tokenizer.eos_token_id
        out: list[int] = []
        past: Any = None
        step = ids
        with torch.no_grad():
            for _ in range(limit):
                logits, past = model.decode_step(step, past)
                nxt = int(logits[0, -1].argmax())
                if eos is not None and nxt == eos:
                    break
                out.append(nxt)
                step = torch.as_tensor([[nxt]], device=ids.device)
                text = prefill + model.tokenizer.decode(out, skip_special_tokens=True)
                if "}" in text and _first_json_object(text)[0] is not None:
                    break
        return prefill + str(model.tokenizer.decode(out, skip_special_tokens=True))

    return answer


def _prompt_text(prompt: str) -> str:
    """The input text of a prompt :func:`build_prompt` wrote (its last ``<text>`` block)."""
    begin = prompt.rfind("<text>\n")
    end = prompt.find("\n</text>", begin + len("<text>\n")) if begin >= 0 else -1
    if begin < 0 or end < 0:
        raise InvalidInputError("prompt", "must hold the <text> block build_prompt writes",
                                prompt[-120:])
    return prompt[begin + len("<text>\n"):end]


class _Vocabulary:
    """Each token's text, and the token groups the constrained decoder chooses among."""

    def __init__(self, model: TextModel) -> None:
        tok = model.tokenizer
        size = len(tok)
        special = set(model.special_ids)
        texts = tok.batch_decode([[i] for i in range(size)], skip_special_tokens=False,
                                 clean_up_tokenization_spaces=False)
        self.texts = ["" if i in special else str(t) for i, t in enumerate(texts)]
        # Quotable: no quote, backslash or control character (the JSON string then holds
        # the characters as they are) and no undecodable byte piece.
        self.quotable = [(i, t) for i, t in enumerate(self.texts)
                         if t and "\ufffd" not in t and '"' not in t and "\\" not in t
                         and all(ord(c) >= 0x20 for c in t)]
        self.closing = self._starting('"')
        self.comma = self._starting(",")
        self.bracket = self._starting("]")
        self.brace = self._starting("}")
        self.digits = {t: i for i, t in enumerate(self.texts) if t in "0123456789" and t}

    def _starting(self, char: str) -> list[int]:
        return [i for i, t in enumerate(self.texts) if t.startswith(char)]


class _Decoder:
    """Greedy decoding of a causal LM through its key/value cache: ``force`` feeds text
    the format fixes, ``choose`` takes the most probable of the allowed tokens."""

    def __init__(self, model: TextModel, prompt: str) -> None:
        self.model = model
        self.cache: Any = None
        self.last = self._feed(model.encode(prompt).input_ids)

    def _feed(self, ids: torch.Tensor) -> torch.Tensor:
        logits, self.cache = self.model.decode_step(ids, self.cache)
        out: torch.Tensor = logits[0, -1].float()
        return out

    def feed(self, ids: Sequence[int]) -> None:
        if ids:
            self.last = self._feed(torch.as_tensor([list(ids)], device=self.model.device))

    def force(self, text: str) -> str:
        self.feed(self.model.tokenizer(text, add_special_tokens=False)["input_ids"])
        return text

    def best(self, ids: Sequence[int]) -> tuple[int, float]:
        """The allowed token of highest logit, and that logit (-inf when none)."""
        if not ids:
            return -1, -math.inf
        index = torch.as_tensor(list(ids), device=self.last.device)
        scores = self.last.detach()[index]
        top = int(scores.argmax())
        return int(ids[top]), float(scores[top])


def constrained_answerer(model: TextModel, labels: Sequence[str], *, max_phrases: int = 3,
                         max_phrase_tokens: int = 8) -> Answerer:
    """A causal LM's greedy answer, constrained to the self-explanation schema.

    At each step only tokens that keep the answer a valid prefix of
    ``{"label": L, "evidence": [Q, ...], "confidence": C}`` are allowed: ``L`` one of
    ``labels`` (greedy over the labels' tokens, :data:`ANSWER_PREFILL` first), each quote
    ``Q`` a non-empty substring of the input text (``max_phrase_tokens`` tokens at most;
    the quote ends where the model's best closing-quote token beats its best allowed
    continuation), 1 to ``max_phrases`` quotes (another one when the model's best comma
    token beats its best bracket token), and ``C`` a number in [0, 1] of at most two
    decimals. The punctuation between the fields is fed, not sampled. The answer
    therefore always parses and never quotes what the text does not hold; what is left to
    the model is the label, which words it quotes and its confidence. The text is read
    from the prompt's ``<text>`` block (:func:`build_prompt`); an empty text gets an
    empty evidence list (only its label is read, as on redaction).
    """
    if model.kind != "causal_lm":
        raise UnsupportedModelError("model", "constrained answers need a causal LM; pass "
                                    "answer= for a classifier", model.kind)
    names = _labels(labels)
    phrases = _int("max_phrases", max_phrases, 1)
    length = _int("max_phrase_tokens", max_phrase_tokens, 1)
    label_ids = _label_token_ids(model, names)
    vocab = _Vocabulary(model)

    def label(decoder: _Decoder) -> str:
        chosen: list[int] = []
        while True:
            options = {ids[len(chosen)] for ids in label_ids
                       if ids[:len(chosen)] == chosen and len(ids) > len(chosen)}
            token, _ = decoder.best(sorted(options))
            chosen.append(token)
            decoder.feed([token])
            for name, ids in zip(names, label_ids, strict=True):
                if ids == chosen:
                    return name

    def quote(decoder: _Decoder, text: str, pieces: list[tuple[int, str]],
              starts: set[int]) -> str:
        """One quote: a run of whole words of ``text`` from one of ``starts`` (word
        starts no earlier quote began at); the starts it may still have are narrowed as
        it grows."""
        phrase, where = "", set(starts)
        for _ in range(length):
            allowed = [(i, t) for i, t in pieces if (phrase or not t[0].isspace())
                       and any(text.startswith(phrase + t, p) for p in where)]
            token, score = decoder.best([i for i, _ in allowed])
            ends = phrase.strip() and any(_word_end(text, p + len(phrase)) for p in where)
            if ends and (token < 0 or decoder.best(vocab.closing)[1] >= score):
                break
            if token < 0:
                break
            phrase += vocab.texts[token]
            where = {p for p in where if text.startswith(phrase, p)}
            decoder.feed([token])
        if not phrase.strip():        # nothing quotable (no token spells a piece of it)
            phrase = decoder.force(json.dumps(text.split()[0])[1:-1])
        while phrase and not any(_word_end(text, p + len(phrase)) for p in where):
            phrase = phrase[:-1]      # the length limit stopped it inside a word
        starts -= {p for p in where if text.startswith(phrase, p)}
        return phrase.strip() or phrase

    def number(decoder: _Decoder) -> str:
        token, _ = decoder.best([vocab.digits[d] for d in "01" if d in vocab.digits])
        if token < 0 or vocab.texts[token] == "1":
            return decoder.force("1") if token < 0 else _fed(decoder, token, vocab)
        out = _fed(decoder, token, vocab) + decoder.force(".")
        digits = [vocab.digits[d] for d in "0123456789" if d in vocab.digits]
        token, _ = decoder.best(digits)
        out += _fed(decoder, token, vocab)
        more, score = decoder.best(digits)
        if decoder.best(vocab.brace)[1] < score:
            out += _fed(decoder, more, vocab)
        return out

    def answer(prompt: str) -> str:
        text = _prompt_text(prompt)
        decoder = _Decoder(model, prompt + ANSWER_PREFILL)
        out = ANSWER_PREFILL + label(decoder) + decoder.force('", "evidence": [')
        pieces = [(i, t) for i, t in vocab.quotable if t in text] if text.strip() else []
        starts = ({m.start() for m in re.finditer(r"\w+", text)}
                  or {m.start() for m in re.finditer(r"\S+", text)})
        stated: list[str] = []
        while text.strip() and starts and len(stated) < phrases:
            out += decoder.force('"') if not stated else decoder.force(', "')
            stated.append(quote(decoder, text, pieces, starts))
            out += stated[-1] + decoder.force('"')
            if decoder.best(vocab.comma)[1] <= decoder.best(vocab.bracket)[1]:
                break
        out += decoder.force('], "confidence": ')
        out += number(decoder)
        return out + "}"

    return answer


def _word_end(text: str, end: int) -> bool:
    """Whether a quote ending at character ``end`` ends a word (not inside one)."""
    return end >= len(text) or not (text[end - 1].isalnum() and text[end].isalnum())


def _fed(decoder: _Decoder, token: int, vocab: _Vocabulary) -> str:
    decoder.feed([token])
    return vocab.texts[token]


# ---------------------------------------------------------------------------- scores
@dataclass
class LabelScorer:
    """``p(label | input with some words removed)``: the score function of the ERASER
    metrics, called as ``scorer(text, erased_spans)``.

    ``removal="pad"`` (classifiers): tokens overlapping an erased span become PAD, length
    kept. ``removal="delete"``: the spans are deleted from the text and it is re-tokenised;
    a causal LM is asked through :func:`build_prompt` and scored on the label's tokens
    after :data:`ANSWER_PREFILL`, renormalised over ``labels``. Results are cached.
    """

    model: TextModel
    labels: tuple[str, ...]
    label: str
    removal: Literal["pad", "delete"]
    _cache: dict[tuple[str, tuple[Span, ...]], np.ndarray] = field(
        default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.labels = _labels(self.labels)
        if self.label not in self.labels:
            raise InvalidInputError("label", f"must be one of {list(self.labels)}", self.label)
        if self.removal not in ("pad", "delete"):
            raise InvalidInputError("removal", "must be 'pad' or 'delete'", self.removal)
        if self.model.kind == "classifier":
            missing = [x for x in self.labels if x not in self.model.class_names]
            if missing:
                raise InvalidInputError("labels", "must be class names of the classifier "
                                        f"{list(self.model.class_names)}", missing)
        elif self.removal == "pad":
            raise UnsupportedModelError("model", "PAD removal is for classifiers; a causal "
                                        "LM's words are deleted", self.model.kind)
        else:
            _label_token_ids(self.model, self.labels)

    def __call__(self, text: str, erased: Sequence[Span] = ()) -> float:
        probs = self.probabilities(text, erased)
        return float(probs[self.labels.index(self.label)])

    def outputs(self, text: str, erased: Sequence[Span] = ()) -> np.ndarray:
        """The model's raw output per label: a classifier's logits, a causal LM's
        ``log p(label tokens | prompt, prefix)``."""
        raw = self._raw(text, erased)
        if self.model.kind == "classifier":
            raw = raw[[self.model.class_names.index(x) for x in self.labels]]
        return raw

    def probabilities(self, text: str, erased: Sequence[Span] = ()) -> np.ndarray:
        """Probabilities over ``labels`` (a classifier's softmax over all its classes,
        read at the labels; a causal LM's renormalised over the labels)."""
        raw = self._raw(text, erased)
        probs: np.ndarray = np.exp(raw - raw.max())
        probs /= probs.sum()
        if self.model.kind == "classifier":
            probs = probs[[self.model.class_names.index(x) for x in self.labels]]
        return probs

    def _raw(self, text: str, erased: Sequence[Span]) -> np.ndarray:
        """Cached: all of a classifier's logits, or a causal LM's label log-probabilities."""
        key = (text, tuple(sorted((int(s), int(e)) for s, e in erased)))
        if key not in self._cache:
            self._cache[key] = (self._classifier_logits(*key)
                                if self.model.kind == "classifier"
                                else self._label_log_probs(*key))
        return self._cache[key]

    def _classifier_logits(self, text: str, erased: tuple[Span, ...]) -> np.ndarray:
        if self.removal == "delete":
            text, erased = delete_spans(text, erased), ()
        enc = self.model.encode(text if text.strip() else " ")   # nothing left: specials only
        ids = enc.input_ids.clone()
        for pos in range(ids.shape[1]):
            s, e = (int(v) for v in enc.offsets[0, pos])
            if not enc.special[0, pos] and e > s and any(a < e and s < b for a, b in erased):
                ids[0, pos] = self.model.pad_id
        with torch.no_grad():
            logits = self.model.logits(ids, enc.attention_mask)[0]
        out: np.ndarray = logits.double().cpu().numpy()
        return out

    def _label_log_probs(self, text: str, erased: tuple[Span, ...]) -> np.ndarray:
        kept = delete_spans(text, erased)
        prompt = build_prompt(self.model, kept, self.labels).prompt + ANSWER_PREFILL
        return _label_log_probs(self.model, prompt, self.labels)


def _label_token_ids(model: TextModel, labels: Sequence[str]) -> list[list[int]]:
    ids = [list(model.tokenizer(x, add_special_tokens=False)["input_ids"]) for x in labels]
    for i, a in enumerate(ids):
        if not a:
            raise InvalidInputError("labels", "every label must spell at least one token",
                                    labels[i])
        for j, b in enumerate(ids):
            if i != j and b[:len(a)] == a:
                raise InvalidInputError("labels", "no label's tokens may begin another's (the "
                                        "label probabilities would not be comparable)",
                                        [labels[i], labels[j]])
    return ids


def _label_log_probs(model: TextModel, prompt: str, labels: Sequence[str]) -> np.ndarray:
    """``log p(label tokens | prompt)`` for each label (teacher forcing, one batch)."""
    prompt_ids = model.encode(prompt).input_ids[0]
    targets = _label_token_ids(model, labels)
    m, longest = len(prompt_ids), max(len(t) for t in targets)
    ids = torch.full((len(targets), m + longest), model.pad_id, dtype=torch.long,
                     device=prompt_ids.device)
    mask = torch.zeros_like(ids)
    for row, target in enumerate(targets):
        ids[row, :m] = prompt_ids
        ids[row, m:m + len(target)] = torch.as_tensor(target)
        mask[row, :m + len(target)] = 1
    with torch.no_grad():
        logp = torch.log_softmax(model.logits(ids, mask).double(), dim=-1)
    out = np.zeros(len(targets))
    for row, target in enumerate(targets):
        for t, token in enumerate(target):
            out[row] += float(logp[row, m - 1 + t, token])
    return out


# ---------------------------------------------------------------------------- the check
@dataclass(frozen=True)
class Redaction:
    """The evidence words deleted, the model asked again, and what it answered."""

    text: str
    answer: SelfExplanation
    flipped: bool | None          # None when the new answer is not valid
    model_label: str | None       # the model's own top label on the redacted text

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "answer": self.answer.to_dict(), "flipped": self.flipped,
                "model_label": self.model_label}


@dataclass(frozen=True)
class SelfExplanationReport:
    """One self-explanation checked against IG and removal tests.

    ``words`` are the input's words with their IG scores (dicts ``text, start, end,
    tokens, score``; token positions are in the attributed sequence); ``evidence`` marks
    the stated evidence words. ``rationales`` holds comprehensiveness and sufficiency of
    ``"evidence"`` and ``"ig_top_k"`` (IG's top words, as many as there are evidence
    words). Fields other than ``answer`` are empty or ``None`` when the answer is invalid.
    """

    text: str
    labels: tuple[str, ...]
    prompt: str
    answer: SelfExplanation
    model_kind: str
    removal: str
    attribution: str
    words: tuple[dict[str, Any], ...] = ()
    evidence: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    outputs: tuple[float, ...] | None = None
    probabilities: tuple[float, ...] | None = None
    agreement: dict[str, Any] | None = None
    rationales: dict[str, dict[str, Any]] | None = None
    aopc: dict[str, Any] | None = None
    redaction: Redaction | None = None
    wall_time_s: float = 0.0
    random_state: int | None = None

    @property
    def valid(self) -> bool:
        return self.answer.valid

    @property
    def scores(self) -> np.ndarray:
        return np.array([w["score"] for w in self.words], dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {"method": METHOD, "text": self.text, "labels": list(self.labels),
                "prompt": self.prompt, "answer": self.answer.to_dict(),
                "model_kind": self.model_kind, "removal": self.removal,
                "attribution": self.attribution,
                "words": [dict(w, tokens=list(w["tokens"])) for w in self.words],
                "evidence_mask": [bool(v) for v in self.evidence],
                "outputs": list(self.outputs) if self.outputs is not None else None,
                "probabilities": list(self.probabilities)
                if self.probabilities is not None else None,
                "agreement": self.agreement, "rationales": self.rationales, "aopc": self.aopc,
                "redaction": self.redaction.to_dict() if self.redaction else None,
                "wall_time_s": self.wall_time_s, "random_state": self.random_state}

    def as_explanation(self, model: TextModel) -> Explanation:
        """The IG word scores as an :class:`Explanation` (method ``"self_explanation"``);
        the evidence mask and the checks go into ``parameters``."""
        if not self.answer.valid or self.answer.label is None or not self.words:
            raise InvalidInputError("report", "has no attributions: the answer was not valid "
                                    "or the input has no words", self.answer.reason)
        params = self.to_dict()
        params.pop("method")
        return text_explanation(
            model, METHOD, self.scores[None], target=[self.labels.index(self.answer.label)],
            prediction=np.asarray(self.outputs)[None],
            output_space="logit" if self.model_kind == "classifier" else "log_probability",
            parameters=params, wall_time_s=self.wall_time_s,
            tokens=[[w["text"] for w in self.words]], seed=self.random_state)


def _ig_words(model: TextModel, prompt: SelfExplanationPrompt, label: str, attribution: str,
              n_steps: int, tolerance: float, batch: int | None) -> list[dict[str, Any]]:
    if model.kind == "classifier":
        if attribution not in ("integrated_gradients", "gradient_x_input", "occlusion"):
            raise InvalidInputError("attribution", "must be 'integrated_gradients', "
                                    "'gradient_x_input' or 'occlusion'", attribution)
        ig = token_attributions(model, prompt.text, method=attribution,  # type: ignore[arg-type]
                                target=label, n_steps=n_steps, tolerance=tolerance,
                                internal_batch_size=batch)
        return _text_words(prompt.text, model.encode(prompt.text), ig.values[0], 0)
    if attribution != "integrated_gradients":
        raise InvalidInputError("attribution", "a causal LM is explained with "
                                "'integrated_gradients'", attribution)
    full = prompt.prompt + ANSWER_PREFILL
    ig = generation_attributions(model, full, target=label, n_steps=n_steps,
                                 tolerance=tolerance, internal_batch_size=batch)
    sequence = np.asarray(ig.parameters["sequence"], dtype=np.float64)
    return _text_words(prompt.text, model.encode(full), sequence, prompt.start)


def _rationale(scorer: LabelScorer, text: str, chosen: list[dict[str, Any]],
               words: list[dict[str, Any]]) -> dict[str, Any]:
    return {"k": len(chosen), "words": [w["text"] for w in chosen],
            "comprehensiveness": comprehensiveness(scorer, text, chosen),
            "sufficiency": sufficiency(scorer, text, chosen, words)}


def check_self_explanation(model: TextModel, text: str, labels: Sequence[str], *,
                           answer: Answerer | None = None,
                           attribution: Literal["integrated_gradients", "gradient_x_input",
                                                "occlusion"] = "integrated_gradients",
                           k: int | None = None, n_steps: int = 50, tolerance: float = 0.05,
                           internal_batch_size: int | None = 16,
                           n_permutations: int = 1000, random_state: int = 0,
                           max_new_tokens: int = 96,
                           decoding: Literal["constrained", "greedy"] = "constrained"
                           ) -> SelfExplanationReport:
    """Ask a model to explain its answer about ``text`` and check the explanation.

    Parameters
    ----------
    model:
        A causal LM (asked through :func:`build_prompt`, answered greedily unless
        ``answer`` is given) or a classifier (``answer`` then plays the self-explainer;
        the classifier's probabilities are the ERASER scores and its token attributions
        the IG).
    text:
        The input to classify.
    labels:
        The allowed labels (for a classifier, some of its class names).
    answer:
        ``prompt -> raw answer``; default: the causal LM's own answer, decoded as
        ``decoding`` says.
    attribution:
        The attribution method (a causal LM: integrated gradients only).
    k:
        Top-k of the agreement statistics; default the number of evidence words.
    n_steps, tolerance, internal_batch_size:
        IG steps, multiplied by 4 (up to 3,200) until the relative completeness error is
        within ``tolerance`` (see :func:`~xai_sandbox.text.attribution.token_attributions`),
        and the sequences per forward pass (a causal LM's pass holds full-vocabulary
        logits for every prompt position: keep it small for a real LM).
    n_permutations, random_state:
        Size and seed of the permutation null.
    max_new_tokens:
        Length limit of the default greedy answer.
    decoding:
        How the causal LM's default answer is decoded: ``"constrained"``
        (:func:`constrained_answerer`: the answer always parses, its quotes are pieces of
        the text) or ``"greedy"`` (:func:`greedy_answerer`, free text: SmolLM2-135M's
        parses in about 3% of cases).

    Returns
    -------
    SelfExplanationReport
        With only the parsed answer when it is invalid (the caller counts the rate).
    """
    started = time.perf_counter()
    if not isinstance(model, TextModel):
        raise UnsupportedModelError("model", "must be a TextModel", type(model).__name__)
    _text("text", text)
    names = _labels(labels)
    steps = _int("n_steps", n_steps, 2)
    n_perm = _int("n_permutations", n_permutations, 20)
    if k is not None:
        _int("k", k, 1)
    if internal_batch_size is not None:
        _int("internal_batch_size", internal_batch_size, 1)
    if answer is None:
        if model.kind != "causal_lm":
            raise InvalidInputError("answer", "a classifier cannot write a self-explanation; "
                                    "pass answer= (prompt -> raw JSON answer)", None)
        answer = _default_answerer(model, names, decoding, max_new_tokens)
    elif not callable(answer):
        raise InvalidInputError("answer", "must be a callable prompt -> raw answer", answer)
    removal: Literal["pad", "delete"] = "pad" if model.kind == "classifier" else "delete"
    LabelScorer(model, names, names[0], removal)        # checks labels against the model
    prompt = build_prompt(model, text, names)
    parsed = parse_self_explanation(_ask(answer, prompt.prompt), text, names)
    head = SelfExplanationReport(text=text, labels=names, prompt=prompt.prompt, answer=parsed,
                                 model_kind=model.kind, removal=removal,
                                 attribution=attribution, random_state=random_state)
    if not parsed.valid or parsed.label is None:
        return dataclasses.replace(head, wall_time_s=time.perf_counter() - started)
    label = parsed.label
    scorer = LabelScorer(model, names, label, removal)
    words = _ig_words(model, prompt, label, attribution, steps, tolerance, internal_batch_size)
    mask = evidence_mask(words, parsed.spans)
    scores = np.array([w["score"] for w in words], dtype=np.float64)
    n_ev = int(mask.sum())
    agree = None
    if 0 < n_ev < len(words) and (k is None or k <= len(words)):
        agree = agreement(scores, mask, k=k, n_permutations=n_perm, random_state=random_state)
    rationales: dict[str, dict[str, Any]] | None = None
    redaction = None
    if n_ev:
        stated = [w for w, m in zip(words, mask, strict=True) if m]
        top = _top(words, scores, n_ev)
        rationales = {"evidence": _rationale(scorer, text, stated, words),
                      "ig_top_k": _rationale(scorer, text, top, words)}
        deleter = scorer if removal == "delete" else LabelScorer(model, names, label, "delete")
        redaction = _redact(model, answer, text, label, stated, deleter)
    report_aopc = aopc(scorer, text, words, scores) if words else None
    return dataclasses.replace(
        head, words=tuple(words), evidence=mask,
        outputs=tuple(float(v) for v in scorer.outputs(text)),
        probabilities=tuple(float(v) for v in scorer.probabilities(text)),
        agreement=agree, rationales=rationales, aopc=report_aopc, redaction=redaction,
        wall_time_s=time.perf_counter() - started)


def _default_answerer(model: TextModel, labels: tuple[str, ...], decoding: str,
                      max_new_tokens: int) -> Answerer:
    if decoding == "constrained":
        return constrained_answerer(model, labels)
    if decoding == "greedy":
        return greedy_answerer(model, max_new_tokens=max_new_tokens)
    raise InvalidInputError("decoding", "must be 'constrained' or 'greedy'", decoding)


def parse_rate(model: TextModel, texts: Sequence[str], labels: Sequence[str], *,
               answer: Answerer | None = None,
               decoding: Literal["constrained", "greedy"] = "constrained",
               truth: Sequence[str] | None = None, max_new_tokens: int = 96,
               threads: int | None = None) -> dict[str, Any]:
    """How often a model's self-explanations parse: each text asked once
    (:func:`build_prompt`), each answer read by :func:`parse_self_explanation`.

    Returns the number of texts, of valid answers and their share (``rate``), the
    failure reasons with their counts, the share of valid answers quoting something the
    text does not hold, the labels stated, and with ``truth`` (a label per text) the share
    of valid answers whose label is the true one. ``decoding`` names how the answers were
    made (``"given"`` for an ``answer`` callable); ``examples`` holds the first five raw
    answers. Nothing else is computed (no attributions): this is the cheap check a
    report states before it shows any result built on the answers.

    ``threads``: torch's thread count while answering, restored after (``None``: left
    as it is). Decoding feeds one token at a time, which more threads barely speed up;
    on a shared CPU their synchronisation makes it slower (SmolLM2-135M on two busy
    cores: 0.07 s a step with one thread, 0.2 to 0.5 s with two). It is process-wide:
    for batch jobs such as the LLM audit, not for a server's worker threads.
    """
    if isinstance(texts, str) or not isinstance(texts, Sequence) or not texts:
        raise InvalidInputError("texts", "must be a non-empty list of texts", texts)
    names = _labels(labels)
    if truth is not None and (isinstance(truth, str) or len(truth) != len(texts)
                              or not all(t in names for t in truth)):
        raise InvalidInputError("truth", f"must give one of {list(names)} per text", truth)
    source = decoding if answer is None else "given"
    if answer is None:
        if not isinstance(model, TextModel) or model.kind != "causal_lm":
            raise InvalidInputError("answer", "only a causal LM answers by itself; pass "
                                    "answer= (prompt -> raw JSON answer)", None)
        answer = _default_answerer(model, names, decoding, max_new_tokens)
    if threads is not None:
        threads = _int("threads", threads, 1)
    started = time.perf_counter()
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        parsed = [parse_self_explanation(_ask(answer, build_prompt(
            model, _text("texts", t), names).prompt), t, names) for t in texts]
    finally:
        if threads is not None:
            torch.set_num_threads(before)
    valid = [a for a in parsed if a.valid]
    reasons: dict[str, int] = {}
    for a in parsed:
        if not a.valid:
            key = (a.reason or "").split(":")[0]
            reasons[key] = reasons.get(key, 0) + 1
    stated = {x: sum(1 for a in valid if a.label == x) for x in names}
    correct = None if truth is None else _rate(
        sum(1 for a, t in zip(parsed, truth, strict=True) if a.valid and a.label == t),
        len(valid))
    return {"n": len(parsed), "n_valid": len(valid), "rate": len(valid) / len(parsed),
            "decoding": source,
            "failures": reasons,
            "answers_with_hallucination_rate": _rate(
                sum(1 for a in valid if a.hallucinated), len(valid)),
            "labels": stated, "label_accuracy": correct,
            "examples": [a.raw for a in parsed[:5]],
            "wall_time_s": time.perf_counter() - started}


def _ask(answer: Answerer, prompt: str) -> str:
    raw = answer(prompt)
    if not isinstance(raw, str):
        raise InvalidInputError("answer", "must return a string (the raw answer)", raw)
    return raw


def _redact(model: TextModel, answer: Answerer, text: str, label: str,
            stated: list[dict[str, Any]], deleter: LabelScorer) -> Redaction:
    """Madsen et al.'s redaction: delete the evidence words, ask again; also the model's
    own top label on the redacted text (``deleter`` removes words by deletion)."""
    labels = deleter.labels
    spans = _spans(stated)
    redacted = delete_spans(text, spans)
    prompt = build_prompt(model, redacted, labels)
    raw = _ask(answer, prompt.prompt)
    again = (parse_self_explanation(raw, redacted, labels) if redacted.strip()
             else _parse_empty(raw, labels))
    flipped = None if not again.valid else again.label != label
    top = labels[int(np.argmax(deleter.probabilities(text, spans)))]
    return Redaction(redacted, again, flipped, top)


def _parse_empty(raw: str, labels: tuple[str, ...]) -> SelfExplanation:
    """Every word was redacted: only the label can be checked (no quote can be found)."""
    obj, problem = _first_json_object(raw)
    if obj is None:
        return SelfExplanation(valid=False, raw=raw, reason=problem)
    label = obj.get("label")
    if not isinstance(label, str) or label not in labels:
        return SelfExplanation(valid=False, raw=raw, reason="schema: label: must be one of "
                               f"{list(labels)}")
    return SelfExplanation(valid=True, raw=raw, label=label)


# ---------------------------------------------------------------------------- aggregate
def _mean(values: Sequence[float | None]) -> float | None:
    kept = [float(v) for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(kept)) if kept else None


def _rate(hits: int, total: int) -> float | None:
    return hits / total if total else None


def _pooled_agreement(reports: Sequence[SelfExplanationReport], n_permutations: int,
                      random_state: int) -> dict[str, Any] | None:
    """Across examples: the mean of each statistic against the permutation null of the
    mean (each example's random word sets drawn independently, from one generator)."""
    used = [(r, r.agreement) for r in reports if r.agreement is not None]
    if not used:
        return None
    rng = np.random.default_rng(random_state)
    observed: dict[str, list[float]] = {name: [] for name in _STATISTICS}
    zs: dict[str, list[float | None]] = {name: [] for name in _STATISTICS}
    nulls: dict[str, list[np.ndarray]] = {name: [] for name in _STATISTICS}
    for report, agree in used:
        null = _null(report.scores, int(report.evidence.sum()), int(agree["k"]),
                     n_permutations, rng)
        for name in _STATISTICS:
            observed[name].append(float(agree[name]["value"]))
            zs[name].append(agree[name]["z"])
            nulls[name].append(null[name])
    out: dict[str, Any] = {"n_examples": len(used), "n_permutations": n_permutations,
                           "random_state": random_state}
    for name in _STATISTICS:
        test = _test(float(np.mean(observed[name])), np.mean(nulls[name], axis=0))
        test["mean_z"] = _mean(zs[name])
        out[name] = test
    return out


def summarise(reports: Sequence[SelfExplanationReport], *, n_permutations: int = 1000,
              random_state: int = 0) -> dict[str, Any]:
    """Aggregate self-explanation checks over examples (LLM.md 2.6, step 6).

    Returns the parse-failure rate (with the reasons), the hallucination rate (of the
    distinct quotes of valid answers, and the share of answers with any), agreement (the
    mean of each statistic with a pooled permutation test and the mean per-example z),
    mean comprehensiveness and sufficiency of the stated evidence and of IG's top-k, mean
    AOPC, the redaction flip rate (of re-asked answers that were valid) and the rate at
    which the model's own top label changed on the redacted text.
    """
    if isinstance(reports, SelfExplanationReport) or not isinstance(reports, Sequence) \
            or not reports or not all(isinstance(r, SelfExplanationReport) for r in reports):
        raise InvalidInputError("reports", "must be a non-empty list of "
                                "SelfExplanationReport", type(reports).__name__)
    n_perm = _int("n_permutations", n_permutations, 20)
    valid = [r for r in reports if r.valid]
    quotes = sum(len(r.answer.evidence) for r in valid)
    invented = sum(len(r.answer.hallucinated) for r in valid)
    reasons: dict[str, int] = {}
    for r in reports:
        if not r.valid:
            key = (r.answer.reason or "").split(":")[0]
            reasons[key] = reasons.get(key, 0) + 1
    rationales: dict[str, Any] = {}
    for which in ("evidence", "ig_top_k"):
        rows = [r.rationales[which] for r in valid if r.rationales is not None]
        rationales[which] = {
            "n": len(rows),
            "comprehensiveness": _mean([x["comprehensiveness"] for x in rows]),
            "sufficiency": _mean([x["sufficiency"] for x in rows])}
    redone = [r.redaction for r in valid if r.redaction is not None]
    answered = [x for x in redone if x.flipped is not None]
    model_flips = sum(1 for r in valid if r.redaction is not None and r.answer.label is not None
                      and r.redaction.model_label is not None
                      and r.redaction.model_label != _top_label(r))
    return {
        "n_reports": len(reports), "n_valid": len(valid),
        "parse_failure_rate": 1 - len(valid) / len(reports), "parse_failures": reasons,
        "n_quotes": quotes, "n_hallucinated": invented,
        "hallucination_rate": _rate(invented, quotes),
        "answers_with_hallucination_rate": _rate(
            sum(1 for r in valid if r.answer.hallucinated), len(valid)),
        "mean_confidence": _mean([r.answer.confidence for r in valid]),
        "agreement": _pooled_agreement(valid, n_perm, random_state),
        "rationales": rationales,
        "aopc": {"comprehensiveness": _mean([r.aopc["aopc_comprehensiveness"]
                                             for r in valid if r.aopc is not None]),
                 "sufficiency": _mean([r.aopc["aopc_sufficiency"]
                                       for r in valid if r.aopc is not None])},
        "redaction": {"n": len(redone), "n_answered": len(answered),
                      "flip_rate": _rate(sum(1 for x in answered if x.flipped),
                                         len(answered)),
                      "model_flip_rate": _rate(model_flips, len(redone))},
        "removal": sorted({r.removal for r in reports}),
    }


def _top_label(report: SelfExplanationReport) -> str | None:
    """The model's own top label on the full input."""
    if report.probabilities is None:
        return None
    return report.labels[int(np.argmax(report.probabilities))]
