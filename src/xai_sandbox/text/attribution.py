"""Token attributions for transformer classifiers and causal LMs, through Captum.

- **Integrated gradients** on the word embeddings (Captum ``LayerIntegratedGradients``):
  special tokens are kept in the baseline and every other token becomes PAD; only word
  embeddings are interpolated (positions and the attention mask are not); a token's score
  is the signed sum over the embedding dimension; the completeness error is reported.
- **Gradient x input** on the word embeddings (Captum ``LayerGradientXActivation``).
- **Occlusion**: each token replaced by PAD, one at a time (Captum ``FeatureAblation``).
- **Word level**: sub-word scores summed into the words they spell (by character offsets).
- **Causal LMs**: one attribution row per generated token, ``log p(y_t | prompt, y_<t)``,
  over the prompt tokens, and the sequence view (their sum, as log-probabilities add).
  All target tokens go through one IG call as rows of one batch: with causal attention
  the output at position p depends on positions <= p only, so every row can carry the whole
  continuation and read its own position. (Captum's ``LLMGradientAttribution`` runs one IG
  call per target token.)
- **Contrastive**: why this class (or next token) rather than the foil: the difference of
  the two logits is explained.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from xai_sandbox.errors import InvalidInputError, InvalidTargetError, UnsupportedModelError
from xai_sandbox.explainers.explanation import Explanation
from xai_sandbox.text.model import Encoded, TextModel, text_explanation

__all__ = ["TEXT_ATTRIBUTION_METHODS", "Word", "generation_attributions", "token_attributions",
           "words", "zero_shot"]

Method = Literal["integrated_gradients", "gradient_x_input", "occlusion"]
TEXT_ATTRIBUTION_METHODS = ("integrated_gradients", "gradient_x_input", "occlusion")


@dataclass(frozen=True)
class Word:
    """A word of the input: its text, character span, token positions and summed score."""

    text: str
    start: int
    end: int
    tokens: tuple[int, ...]
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "start": self.start, "end": self.end,
                "tokens": list(self.tokens), "score": self.score}


def _check_method(method: str) -> None:
    if method not in TEXT_ATTRIBUTION_METHODS:
        raise InvalidInputError("method", f"must be one of {list(TEXT_ATTRIBUTION_METHODS)}",
                                method)


def _check_steps(n_steps: int) -> None:
    if not isinstance(n_steps, int) or isinstance(n_steps, bool) or not 2 <= n_steps <= 2048:
        raise InvalidInputError("n_steps", "must be an integer in [2, 2048]", n_steps)


def _class_index(model: TextModel, value: Any, parameter: str, n: int) -> torch.Tensor:
    k = len(model.class_names)
    if isinstance(value, str):
        if value not in model.class_names:
            raise InvalidTargetError(parameter, f"must be one of {list(model.class_names)}",
                                     value)
        value = model.class_names.index(value)
    arr = np.asarray(value)
    if arr.dtype.kind not in "iu" or arr.ndim > 1 or (arr.ndim == 1 and arr.shape[0] != n) \
            or ((arr < 0) | (arr >= k)).any():
        raise InvalidTargetError(parameter, f"must be a class index in [0, {k}) or a class "
                                 f"name, one or one per text ({n})", value)
    return torch.as_tensor(np.broadcast_to(arr, (n,)).copy(), dtype=torch.long)


def token_attributions(model: TextModel, texts: str | Sequence[str], *,
                       method: Method = "integrated_gradients", target: Any = None,
                       foil: Any = None, n_steps: int = 50, tolerance: float = 0.05,
                       internal_batch_size: int | None = None) -> Explanation:
    """Per-token attributions of a classifier's logit (or ``target - foil``).

    ``target`` defaults to the predicted class. Integrated gradients start at ``n_steps``
    and multiply them by 4 (up to 3,200) until every row's relative completeness error is
    within ``tolerance``; the steps used and the errors are reported. Values are
    ``(n, T)``, zero on padding; ``parameters["tokens"]`` and ``parameters["words"]`` give
    each row's tokens and words.
    """
    from captum.attr import FeatureAblation, LayerGradientXActivation, LayerIntegratedGradients

    if model.kind != "classifier":
        raise UnsupportedModelError("model", "token_attributions() explains classifiers; use "
                                    "generation_attributions() for a causal LM", model.kind)
    _check_method(method)
    _check_steps(n_steps)
    started = time.perf_counter()
    enc = model.encode(texts)
    n = enc.input_ids.shape[0]
    with torch.no_grad():
        logits = model.logits(enc.input_ids, enc.attention_mask).double()
    chosen = (logits.argmax(dim=1) if target is None
              else _class_index(model, target, "target", n))
    contrast = None if foil is None else _class_index(model, foil, "foil", n)
    if contrast is not None and bool((contrast == chosen).any()):
        raise InvalidTargetError("foil", "must differ from the target class", foil)

    def forward(input_ids: torch.Tensor, attention_mask: torch.Tensor,
                classes: torch.Tensor, foils: torch.Tensor | None) -> torch.Tensor:
        out = model.logits(input_ids, attention_mask)
        rows = torch.arange(out.shape[0])
        value = out[rows, classes]
        return value - out[rows, foils] if foils is not None else value

    extra = (enc.attention_mask, chosen, contrast)
    baseline = model.baseline_ids(enc)
    delta = expected = None
    steps_used = None
    if method == "integrated_gradients":
        with torch.no_grad():
            expected = forward(baseline, *extra).double().cpu().numpy()
            explained = forward(enc.input_ids, *extra).double().cpu().numpy()
        ig = LayerIntegratedGradients(forward, model.embeddings())
        values, delta, steps_used = _converged(
            lambda steps: ig.attribute(enc.input_ids, baselines=baseline,
                                       additional_forward_args=extra, n_steps=steps,
                                       internal_batch_size=internal_batch_size,
                                       return_convergence_delta=True),
            n_steps, explained - expected, tolerance)
    elif method == "gradient_x_input":
        values = LayerGradientXActivation(forward, model.embeddings()).attribute(
            enc.input_ids, additional_forward_args=extra).sum(dim=-1)
    else:
        mask = torch.arange(enc.input_ids.shape[1]).expand_as(enc.input_ids)
        with torch.no_grad():
            values = FeatureAblation(forward).attribute(
                enc.input_ids, baselines=model.pad_id, additional_forward_args=extra,
                feature_mask=mask, perturbations_per_eval=enc.input_ids.shape[1])
    if not isinstance(values, np.ndarray):
        values = values.detach().double().cpu().numpy()
    values_np = values * enc.attention_mask.cpu().numpy()
    if method == "occlusion":
        values_np[enc.special] = 0.0   # special tokens are not occluded
    rows = [enc.tokens(model, i) for i in range(n)]
    out_logits = logits.cpu().numpy()
    if contrast is not None:
        prediction = (out_logits[np.arange(n), chosen.numpy()]
                      - out_logits[np.arange(n), contrast.numpy()])[:, None]
        target_out = np.zeros(n, dtype=np.int64)
    else:
        prediction, target_out = out_logits, chosen.numpy()
    params: dict[str, Any] = {
        "n_steps": steps_used, "tolerance": tolerance if steps_used else None,
        "baseline": "special tokens kept, every other token PAD"
        if method != "gradient_x_input" else None,
        "layer": "word embeddings", "aggregation": "signed sum over the embedding dimension",
        "target_class": [model.class_names[int(c)] for c in chosen],
        "foil_class": [model.class_names[int(c)] for c in contrast] if contrast is not None
        else None,
        "words": [[w.to_dict() for w in words(values_np[i], enc, i)] for i in range(n)]}
    return text_explanation(
        model, method, values_np[:, :enc.input_ids.shape[1]], target=target_out,
        prediction=prediction, output_space="contrast" if contrast is not None else "logit",
        parameters=params, wall_time_s=time.perf_counter() - started, tokens=rows,
        baseline=baseline.cpu().numpy(), expected_value=expected, delta=delta)


def _converged(run: Any, n_steps: int, gap: np.ndarray, tolerance: float,
               max_steps: int = 3200) -> tuple[np.ndarray, np.ndarray, int]:
    """Run IG with more steps (x4, at most ``max_steps``) until the relative completeness
    error ``|delta| / |F(x) - F(baseline)|`` of every row is within ``tolerance``; the
    error reached is reported either way (``Explanation.completeness_error``)."""
    if not isinstance(tolerance, int | float) or isinstance(tolerance, bool) or not (
            0 < tolerance < 1):
        raise InvalidInputError("tolerance", "must be a number in (0, 1)", tolerance)
    steps = n_steps
    while True:
        attr, delta_t = run(steps)
        values = attr.sum(dim=-1).detach().double().cpu().numpy()
        delta = delta_t.detach().double().cpu().numpy()
        error = np.abs(delta) / np.maximum(np.abs(gap), 1e-12)
        if float(error.max()) <= tolerance or steps * 4 > max_steps:
            return values, delta, steps
        steps *= 4


def words(values: np.ndarray, encoded: Encoded, row: int = 0) -> list[Word]:
    """Sum one row's token scores into words: a token continues the previous word when
    its characters follow on with no gap (sub-words, attached punctuation)."""
    scores = np.asarray(values, dtype=np.float64).ravel()
    text = encoded.texts[row]
    out: list[Word] = []
    current: list[int] = []
    start = end = -1
    for pos in range(encoded.input_ids.shape[1]):
        if encoded.special[row, pos]:
            continue
        s, e = (int(v) for v in encoded.offsets[row, pos])
        if e <= s:
            continue
        if current and s == end:          # no gap: the same word goes on
            current.append(pos)
            end = e
            continue
        if current:
            out.append(Word(text[start:end], start, end, tuple(current),
                            float(scores[current].sum())))
        current, start, end = [pos], s, e
    if current:
        out.append(Word(text[start:end], start, end, tuple(current),
                        float(scores[current].sum())))
    return out


def generation_attributions(model: TextModel, prompt: str, *, target: str | None = None,
                            max_new_tokens: int = 8, foil: str | None = None,
                            n_steps: int = 50, tolerance: float = 0.05,
                            internal_batch_size: int | None = 64,
                            max_steps: int = 800) -> Explanation:
    """Integrated gradients of a causal LM: one row per generated (or given ``target``)
    token, ``log p(y_t | prompt, y_<t)``, over the prompt's tokens; the sequence view is
    ``parameters["sequence"]`` (the sum of the rows). With ``foil``, a single next token is
    explained as ``logit(target) - logit(foil)``. Steps grow x4 up to ``max_steps`` (800:
    on SmolLM2 the path from a PAD baseline is sharp and IG may not reach the tolerance;
    the completeness error says how far it got).
    """
    from captum.attr import LayerIntegratedGradients

    if model.kind != "causal_lm":
        raise UnsupportedModelError("model", "generation_attributions() explains causal LMs",
                                    model.kind)
    _check_steps(n_steps)
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidInputError("prompt", "must be a non-empty text", prompt)
    if not isinstance(max_new_tokens, int) or not 1 <= max_new_tokens <= 256:
        raise InvalidInputError("max_new_tokens", "must be an integer in [1, 256]",
                                max_new_tokens)
    started = time.perf_counter()
    enc = model.encode(prompt)
    prompt_ids = enc.input_ids[0]
    if foil is not None:
        answer = _single_token(model, target, "target")
        rival = _single_token(model, foil, "foil")
        continuation = torch.as_tensor([answer], dtype=torch.long)
    elif target is not None:
        continuation = _continuation_ids(model, target)
    else:
        continuation = _greedy(model, prompt_ids, max_new_tokens)
    m = len(prompt_ids)
    k = int(continuation.shape[0])
    full = torch.cat([prompt_ids, continuation[:-1]])          # inputs up to y_{k-1}
    ids = full.expand(k, -1).clone()
    positions = torch.arange(m - 1, m - 1 + k)                  # where y_t is predicted
    mask = torch.ones_like(ids)
    base_row = full.clone()
    keep = torch.as_tensor(enc.special[0], dtype=torch.bool)
    base_row[:m] = torch.where(keep, prompt_ids, torch.full_like(prompt_ids, model.pad_id))
    baselines = base_row.expand(k, -1).clone()

    # Only the positions that predict a target token need the vocabulary projection:
    # models that take ``logits_to_keep`` (Llama, GPT-2) skip it elsewhere.
    first = m - 1
    keep = torch.arange(first, first + k)
    sliced = "logits_to_keep" in inspect.signature(model.module.forward).parameters

    def forward(input_ids: torch.Tensor, attention_mask: torch.Tensor, where: torch.Tensor,
                tokens: torch.Tensor, rivals: torch.Tensor | None) -> torch.Tensor:
        logits: torch.Tensor
        if sliced:
            logits = model.forward(input_ids, attention_mask, logits_to_keep=keep).logits
            where = where - first
        else:
            logits = model.logits(input_ids, attention_mask)
        rows = torch.arange(logits.shape[0])
        at = logits[rows, where]
        if rivals is not None:
            return at[rows, tokens] - at[rows, rivals]
        return torch.log_softmax(at.double(), dim=-1)[rows, tokens]

    rivals = None if foil is None else torch.full((k,), rival, dtype=torch.long)
    extra = (mask, positions, continuation, rivals)
    with torch.no_grad():
        scored = forward(ids, mask, *extra[1:]).double().cpu().numpy()
        expected = forward(baselines, mask, *extra[1:]).double().cpu().numpy()
    ig = LayerIntegratedGradients(forward, model.embeddings())
    full_values, delta, steps_used = _converged(
        lambda steps: ig.attribute(ids, baselines=baselines, additional_forward_args=extra,
                                   n_steps=steps, internal_batch_size=internal_batch_size,
                                   return_convergence_delta=True),
        n_steps, scored - expected, tolerance, max_steps)
    values = full_values[:, :m]
    generated = [str(t) for t in model.tokenizer.convert_ids_to_tokens(continuation.tolist())]
    params: dict[str, Any] = {
        "n_steps": steps_used, "tolerance": tolerance,
        "baseline": "special tokens kept, every other prompt token PAD",
        "layer": "word embeddings", "prompt": prompt,
        "generated_ids": continuation.tolist(), "generated_tokens": generated,
        "generated_text": model.tokenizer.decode(continuation.tolist()),
        "sequence": values.sum(axis=0).tolist(),
        "foil": foil, "words": [w.to_dict() for w in words(values.sum(axis=0), enc, 0)]}
    return text_explanation(
        model, "integrated_gradients", values, target=np.zeros(k, dtype=np.int64),
        prediction=scored[:, None], parameters=params,
        output_space="contrast" if foil is not None else "log_probability",
        wall_time_s=time.perf_counter() - started, tokens=[enc.tokens(model, 0)] * k,
        expected_value=expected, delta=delta)


def _single_token(model: TextModel, text: str | None, parameter: str) -> int:
    if not isinstance(text, str) or not text:
        raise InvalidInputError(parameter, "must be a non-empty text (one token)", text)
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise InvalidInputError(parameter, "must be a single token for a contrastive "
                                "explanation", f"{text!r} is {len(ids)} tokens")
    return int(ids[0])


def _continuation_ids(model: TextModel, text: str) -> torch.Tensor:
    if not isinstance(text, str) or not text:
        raise InvalidInputError("target", "must be a non-empty text", text)
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    return torch.as_tensor(ids, dtype=torch.long, device=model.device)


def _greedy(model: TextModel, prompt_ids: torch.Tensor, n: int) -> torch.Tensor:
    """Greedy continuation of the prompt (stops at the end-of-sequence token)."""
    ids = prompt_ids[None]
    out: list[int] = []
    eos = model.tokenizer.eos_token_id
    with torch.no_grad():
        for _ in range(n):
            nxt = int(model.logits(ids)[0, -1].argmax())
            if eos is not None and nxt == eos and out:
                break
            out.append(nxt)
            ids = torch.cat([ids, torch.as_tensor([[nxt]], device=ids.device)], dim=1)
    return torch.as_tensor(out, dtype=torch.long, device=prompt_ids.device)


def zero_shot(model: TextModel, prompt: str, labels: Sequence[str]) -> dict[str, float]:
    """Zero-shot classification with a causal LM: each label's probability as the
    continuation of ``prompt`` (the sum of its tokens' log-probabilities, teacher forced),
    normalised over the labels."""
    if model.kind != "causal_lm":
        raise UnsupportedModelError("model", "zero-shot scoring needs a causal LM", model.kind)
    if isinstance(labels, str) or len(labels) < 2 or len(set(labels)) != len(labels):
        raise InvalidInputError("labels", "must be at least two distinct label texts", labels)
    enc = model.encode(prompt)
    prompt_ids = enc.input_ids[0]
    while len(prompt_ids) > 1 and bool(enc.special[0, len(prompt_ids) - 1]):
        prompt_ids = prompt_ids[:-1]       # a trailing [SEP] or EOS would end the text
    scores = []
    with torch.no_grad():
        for label in labels:
            cont = _continuation_ids(model, label)
            ids = torch.cat([prompt_ids, cont])[None]
            logp = torch.log_softmax(model.logits(ids)[0].double(), dim=-1)
            where = torch.arange(len(prompt_ids) - 1, ids.shape[1] - 1)
            scores.append(float(logp[where, cont].sum()))
    s = np.asarray(scores)
    p = np.exp(s - s.max())
    return {label: float(v) for label, v in zip(labels, p / p.sum(), strict=True)}
