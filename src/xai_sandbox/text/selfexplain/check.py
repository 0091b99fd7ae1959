"""The check of one self-explanation: label scores, IG over the input's words, agreement,
ERASER scores and redaction; and the parse rate over many texts."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from xai_sandbox.errors import InvalidInputError, UnsupportedModelError
from xai_sandbox.explainers.explanation import Explanation, TextDetail
from xai_sandbox.text import checks
from xai_sandbox.text.attribution import generation_attributions, token_attributions
from xai_sandbox.text.model import TextModel, text_explanation
from xai_sandbox.text.selfexplain.agreement import (
    agreement,
    aopc,
    comprehensiveness,
    delete_spans,
    sufficiency,
    top_words,
    word_spans,
)
from xai_sandbox.text.selfexplain.parsing import (
    ANSWER_PREFILL,
    METHOD,
    Answerer,
    SelfExplanation,
    Span,
    checked_labels,
    checked_text,
    evidence_mask,
    first_json_object,
    parse_self_explanation,
    rate_of,
    text_words,
)
from xai_sandbox.text.selfexplain.prompts import (
    SelfExplanationPrompt,
    build_prompt,
    constrained_answerer,
    greedy_answerer,
    label_token_ids,
)

__all__ = [
    "LabelScorer",
    "Redaction",
    "SelfExplanationReport",
    "check_self_explanation",
    "parse_rate",
]


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
        self.labels = checked_labels(self.labels)
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
            label_token_ids(self.model, self.labels)

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

def _label_log_probs(model: TextModel, prompt: str, labels: Sequence[str]) -> np.ndarray:
    """``log p(label tokens | prompt)`` for each label (teacher forcing, one batch)."""
    prompt_ids = model.encode(prompt).input_ids[0]
    targets = label_token_ids(model, labels)
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
            tokens=[[w["text"] for w in self.words]], seed=self.random_state,
            text=TextDetail("self_explanation", self.to_dict()))


def _ig_words(model: TextModel, prompt: SelfExplanationPrompt, label: str, attribution: str,
              n_steps: int, tolerance: float, batch: int | None) -> list[dict[str, Any]]:
    if model.kind == "classifier":
        if attribution not in ("integrated_gradients", "gradient_x_input", "occlusion"):
            raise InvalidInputError("attribution", "must be 'integrated_gradients', "
                                    "'gradient_x_input' or 'occlusion'", attribution)
        ig = token_attributions(model, prompt.text, method=attribution,  # type: ignore[arg-type]
                                target=label, n_steps=n_steps, tolerance=tolerance,
                                internal_batch_size=batch)
        return text_words(prompt.text, model.encode(prompt.text), ig.values[0], 0)
    if attribution != "integrated_gradients":
        raise InvalidInputError("attribution", "a causal LM is explained with "
                                "'integrated_gradients'", attribution)
    full = prompt.prompt + ANSWER_PREFILL
    ig = generation_attributions(model, full, target=label, n_steps=n_steps,
                                 tolerance=tolerance, internal_batch_size=batch)
    sequence = np.asarray(ig.parameters["sequence"], dtype=np.float64)
    return text_words(prompt.text, model.encode(full), sequence, prompt.start)


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
    checked_text("text", text)
    names = checked_labels(labels)
    steps = checks.integer("n_steps", n_steps, 2)
    n_perm = checks.integer("n_permutations", n_permutations, 20)
    if k is not None:
        checks.integer("k", k, 1)
    if internal_batch_size is not None:
        checks.integer("internal_batch_size", internal_batch_size, 1)
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
        top = top_words(words, scores, n_ev)
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
    names = checked_labels(labels)
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
        threads = checks.integer("threads", threads, 1)
    started = time.perf_counter()
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        parsed = [parse_self_explanation(_ask(answer, build_prompt(
            model, checked_text("texts", t), names).prompt), t, names) for t in texts]
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
    correct = None if truth is None else rate_of(
        sum(1 for a, t in zip(parsed, truth, strict=True) if a.valid and a.label == t),
        len(valid))
    return {"n": len(parsed), "n_valid": len(valid), "rate": len(valid) / len(parsed),
            "decoding": source,
            "failures": reasons,
            "answers_with_hallucination_rate": rate_of(
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
    spans = word_spans(stated)
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
    obj, problem = first_json_object(raw)
    if obj is None:
        return SelfExplanation(valid=False, raw=raw, reason=problem)
    label = obj.get("label")
    if not isinstance(label, str) or label not in labels:
        return SelfExplanation(valid=False, raw=raw, reason="schema: label: must be one of "
                               f"{list(labels)}")
    return SelfExplanation(valid=True, raw=raw, label=label)
