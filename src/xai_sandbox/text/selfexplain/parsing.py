"""The self-explanation schema, parsing a model's JSON answer, and the words it cites."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from xai_sandbox.errors import InvalidInputError
from xai_sandbox.text.attribution import Word
from xai_sandbox.text.model import Encoded

__all__ = [
    "ANSWER_PREFILL",
    "AOPC_THRESHOLDS",
    "SELF_EXPLANATION_SCHEMA",
    "SelfExplanation",
    "evidence_mask",
    "parse_self_explanation",
    "self_explanation_schema",
]


METHOD = "self_explanation"
ANSWER_PREFILL = '{"label": "'
AOPC_THRESHOLDS = (0.01, 0.05, 0.1, 0.2, 0.5)
STATISTICS = ("precision_at_k", "recall_at_k", "auprc")

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
W = TypeVar("W")


def self_explanation_schema(labels: Sequence[str]) -> dict[str, Any]:
    """:data:`SELF_EXPLANATION_SCHEMA` with the label restricted to ``labels``."""
    names = checked_labels(labels)
    schema = json.loads(json.dumps(SELF_EXPLANATION_SCHEMA))
    schema["properties"]["label"]["enum"] = list(names)
    out: dict[str, Any] = schema
    return out


# ---------------------------------------------------------------------------- validation
def checked_labels(labels: Any) -> tuple[str, ...]:
    if isinstance(labels, str) or not isinstance(labels, Sequence) or len(labels) < 2:
        raise InvalidInputError("labels", "must be a list of at least two labels", labels)
    if not all(isinstance(x, str) and x.strip() and x == x.strip() for x in labels):
        raise InvalidInputError("labels", "every label must be a non-empty string with no "
                                "surrounding whitespace", list(labels))
    if len(set(labels)) != len(labels):
        raise InvalidInputError("labels", "must be distinct", list(labels))
    return tuple(labels)


def checked_text(name: str, text: Any, *, empty: bool = False) -> str:
    if not isinstance(text, str) or (not empty and not text.strip()):
        raise InvalidInputError(name, "must be a non-empty text", text)
    return text


def finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def rate_of(hits: int, total: int) -> float | None:
    return hits / total if total else None


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


def first_json_object(raw: str) -> tuple[dict[str, Any] | None, str | None]:
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
    checked_text("text", text)
    names = checked_labels(labels)
    obj, problem = first_json_object(raw)
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
def word_span(word: WordLike) -> Span:
    if isinstance(word, Word):
        return word.start, word.end
    if isinstance(word, Mapping) and "start" in word and "end" in word:
        return int(word["start"]), int(word["end"])
    raise InvalidInputError("words", "each word must be a Word or a mapping with 'start' and "
                            "'end'", word)


def word_score(word: WordLike) -> float:
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
        s, e = word_span(word)
        mask[i] = any(a < e and s < b for a, b in stated)
    return mask


def text_words(text: str, encoded: Encoded, token_scores: np.ndarray, start: int
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
