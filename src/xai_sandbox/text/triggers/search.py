"""The universal-trigger search, its evaluation against random triggers on held-out inputs,
and the result (as an Explanation and as a table row)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from xai_sandbox.errors import InvalidInputError
from xai_sandbox.explainers.explanation import Explanation, TextDetail
from xai_sandbox.text import checks
from xai_sandbox.text.model import TextModel, text_explanation
from xai_sandbox.text.triggers.scoring import (
    Scores,
    beam_search,
    build_template,
    candidate_swaps,
    evaluate,
    mean_losses,
    slot_gradient,
)
from xai_sandbox.text.triggers.vocabulary import (
    METHOD,
    MIN_RANDOM,
    checked_model,
    checked_seed,
    checked_vocabulary,
    embedding_matrix,
    n_tokens,
    resolve_target,
    round_trips,
)

__all__ = ["TriggerResult", "evaluate_trigger", "search_trigger", "trigger_table"]


# ---------------------------------------------------------------------------- results
def _floats(values: Sequence[float]) -> list[float]:
    return [float(v) for v in values]


@dataclass(frozen=True)
class TriggerResult:
    """A universal trigger, how the search got there, and (optionally) its evaluation.

    Attributes
    ----------
    trigger_ids, tokens, text:
        The trigger's ids, each token decoded, and the whole trigger decoded (the text an
        attacker would type; it encodes back to ``trigger_ids``).
    target, target_name:
        The target class index (``None`` for a causal LM) and its name, or the target
        continuation of a causal LM.
    loss_history:
        Exact targeted loss of the current trigger on all the search texts: the initial
        trigger first, then after each iteration.
    batch_loss_history:
        Exact loss of the beam search's choice on that iteration's batch.
    slot_importance:
        Per slot, the increase of the search-text loss when that slot alone is reset to
        the initial token (what :meth:`as_explanation` reports as values).
    mean_prediction:
        Mean class probabilities with the trigger on the search texts (classifier), or the
        mean probability of the target continuation (causal LM).
    evaluation:
        :func:`evaluate_trigger`'s dictionary on held-out texts, when they were given.
    """

    trigger_ids: tuple[int, ...]
    tokens: tuple[str, ...]
    text: str
    target: int | None
    target_name: str
    initial_ids: tuple[int, ...]
    loss_history: tuple[float, ...]
    batch_loss_history: tuple[float, ...]
    slot_importance: tuple[float, ...]
    mean_prediction: tuple[float, ...]
    iterations_run: int
    stopped_early: bool
    vocabulary_size: int
    parameters: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] | None = None
    wall_time_s: float = 0.0

    @property
    def initial_loss(self) -> float:
        return self.loss_history[0]

    @property
    def best_loss(self) -> float:
        return min(self.loss_history)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dictionary of everything above."""
        return {
            "method": METHOD,
            "trigger_ids": list(self.trigger_ids),
            "tokens": list(self.tokens),
            "text": self.text,
            "target": self.target,
            "target_name": self.target_name,
            "initial_ids": list(self.initial_ids),
            "loss_history": _floats(self.loss_history),
            "batch_loss_history": _floats(self.batch_loss_history),
            "slot_importance": _floats(self.slot_importance),
            "mean_prediction": _floats(self.mean_prediction),
            "iterations_run": self.iterations_run,
            "stopped_early": self.stopped_early,
            "vocabulary_size": self.vocabulary_size,
            "parameters": dict(self.parameters),
            "evaluation": None if self.evaluation is None else dict(self.evaluation),
            "wall_time_s": float(self.wall_time_s),
        }

    def as_explanation(self, model: TextModel) -> Explanation:
        """The trigger as the one result type: one row over the trigger's tokens.

        ``values[0, i]`` is ``slot_importance[i]``: how much the targeted loss on the
        search texts rises when slot ``i`` alone goes back to the initial token (positive:
        the token pushes toward the target). ``prediction`` is ``mean_prediction`` and
        ``target`` the target class (``0`` for a causal LM, whose single prediction is the
        mean probability of the target continuation). The rest of :meth:`to_dict`, the
        evaluation included, goes into ``parameters``.
        """
        model = checked_model(model)
        params = {key: value for key, value in self.to_dict().items()
                  if key not in ("method", "wall_time_s", "tokens")}
        params["values_are"] = ("increase of the mean targeted loss on the search texts when "
                                "the slot is reset to the initial token")
        return text_explanation(
            model, METHOD, np.asarray([self.slot_importance], dtype=np.float64),
            target=[self.target if self.target is not None else 0],
            prediction=[list(self.mean_prediction)], output_space="probability",
            parameters=params, wall_time_s=self.wall_time_s, tokens=[list(self.tokens)],
            seed=self.parameters.get("random_state"), text=TextDetail("trigger", self.to_dict()))


# ---------------------------------------------------------------------------- search
def _init_token(model: TextModel, init_token: Any, vocab: np.ndarray) -> int:
    if isinstance(init_token, int | np.integer) and not isinstance(init_token, bool):
        if int(init_token) in set(vocab.tolist()):
            return int(init_token)
    elif isinstance(init_token, str) and init_token.strip():
        allowed = set(vocab.tolist())
        for spelling in (init_token, " " + init_token.lstrip()):
            ids = model.tokenizer(spelling, add_special_tokens=False)["input_ids"]
            if len(ids) == 1 and int(ids[0]) in allowed:
                return int(ids[0])
    raise InvalidInputError("init_token", "must be one token of the allowed vocabulary (a "
                            "word or a token id)", init_token)


def search_trigger(model: TextModel, texts: Sequence[str], *, target: int | str,
                   length: int = 3, n_candidates: int = 40, beam: int = 3,
                   iterations: int = 20, patience: int = 3, batch_size: int = 32,
                   vocabulary: np.ndarray | Sequence[int] | None = None,
                   random_state: int | None = 0, init_token: str | int = "the",
                   tol: float = 1e-4, held_out_texts: Sequence[str] | None = None,
                   n_random: int = MIN_RANDOM, n_boot: int = 1000) -> TriggerResult:
    """Search a universal trigger that drives ``texts`` to ``target``.

    Parameters
    ----------
    model:
        A classifier (loss: mean cross-entropy of ``target``) or a causal LM (loss:
        ``-mean log p(target continuation | trigger + prompt)``).
    texts:
        The search inputs (for a red-team report, inputs *not* of the target class). Keep
        the held-out inputs apart.
    target:
        A class index or class name; for a causal LM the target continuation text,
        tokenised on its own without special tokens (with byte-level BPE tokenizers such
        as GPT-2's, include the leading space: ``" yes"``). A causal LM sees BOS (or CLS),
        the trigger, the prompt, then the target.
    length:
        Number of trigger tokens, inserted right after CLS/BOS.
    n_candidates, beam:
        HotFlip candidates kept per slot, and the beam width of the exact re-scoring.
    iterations, patience, tol:
        At most ``iterations`` batches; stop once the loss on all the search texts has not
        fallen by more than ``tol`` for ``patience`` iterations.
    batch_size:
        Search texts per iteration (a fresh batch each time, from a shuffled cycle).
    vocabulary:
        Allowed token ids; :func:`trigger_vocabulary` by default (pass your own to add a
        blacklist of label words).
    random_state:
        Seeds the batch order (and the evaluation's random triggers and bootstrap).
    init_token:
        The token the trigger starts from (``"the"``), a word or an id.
    held_out_texts, n_random, n_boot:
        When held-out texts are given, :func:`evaluate_trigger` runs on them with the same
        vocabulary and its result is ``evaluation``.

    Returns
    -------
    TriggerResult
        The trigger with the lowest search-text loss seen, and the loss histories.
    """
    started = time.perf_counter()
    model = checked_model(model)
    texts = checks.texts("texts", texts)
    tgt = resolve_target(model, target)
    length = checks.integer("length", length, 1)
    if length > model.max_length // 2:
        raise InvalidInputError("length", f"must be at most half of the model's max_length "
                                f"({model.max_length // 2})", length)
    n_candidates = checks.integer("n_candidates", n_candidates, 1)
    beam = checks.integer("beam", beam, 1)
    iterations = checks.integer("iterations", iterations, 1)
    patience = checks.integer("patience", patience, 1)
    batch_size = checks.integer("batch_size", batch_size, 1)
    seed = checked_seed(random_state)
    if isinstance(tol, bool) or not isinstance(tol, int | float) or not tol >= 0:
        raise InvalidInputError("tol", "must be a number >= 0", tol)
    held_out = None if held_out_texts is None else checks.texts("held_out_texts", held_out_texts)
    vocab = checked_vocabulary(model, vocabulary)
    first = _init_token(model, init_token, vocab)

    tok = model.tokenizer
    table = embedding_matrix(model).detach()
    vocab_t = torch.as_tensor(vocab, device=table.device)
    everything = build_template(model, texts, length, tgt)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(texts))
    cursor = 0
    checked: dict[tuple[int, ...], bool] = {}

    def valid(options: list[tuple[int, ...]]) -> list[bool]:
        new = [o for o in options if o not in checked]
        checked.update(zip(new, round_trips(tok, new), strict=True))
        return [checked[o] for o in options]

    trigger = (first,) * length
    history = [mean_losses(model, everything, [trigger], tgt)[0]]
    batch_history: list[float] = []
    best, best_loss, stale, stopped = trigger, history[0], 0, False
    for _ in range(iterations):
        if cursor + batch_size > len(order):
            order = np.concatenate([order[cursor:], rng.permutation(len(texts))])
            cursor = 0
        batch = everything.rows(order[cursor:cursor + batch_size])
        cursor += batch_size
        grad = slot_gradient(model, batch, trigger, tgt)
        candidates = candidate_swaps(table, vocab_t, trigger, grad, n_candidates)
        trigger, batch_loss = beam_search(model, batch, trigger, candidates, beam, tgt, valid)
        batch_history.append(batch_loss)
        history.append(mean_losses(model, everything, [trigger], tgt)[0])
        if history[-1] < best_loss - tol:
            best, best_loss, stale = trigger, history[-1], 0
        else:
            stale += 1
            if history[-1] < best_loss:
                best, best_loss = trigger, history[-1]
        if stale >= patience:
            stopped = True
            break

    reset = [(*best[:i], first, *best[i + 1:]) for i in range(length)]
    reset_losses = mean_losses(model, everything, reset, tgt)
    importance = tuple(loss - best_loss for loss in reset_losses)
    final = evaluate(model, everything, torch.tensor([list(best)]), tgt)
    mean_prediction = (tuple(final.classes.mean(dim=0).tolist()) if final.classes is not None
                       else (float(final.probability.mean()),))
    parameters: dict[str, Any] = {
        "length": length, "n_candidates": n_candidates, "beam": beam,
        "iterations": iterations, "patience": patience, "batch_size": batch_size,
        "tol": float(tol), "random_state": seed, "init_token": int(first),
        "n_search_texts": len(texts), "model_kind": model.kind,
    }
    evaluation = None
    if held_out is not None:
        evaluation = evaluate_trigger(model, list(best), held_out, target=target,
                                      n_random=n_random, random_state=seed, n_boot=n_boot,
                                      vocabulary=vocab)
    return TriggerResult(
        trigger_ids=best,
        tokens=tuple(str(t) for t in tok.batch_decode(
            [[i] for i in best], clean_up_tokenization_spaces=False)),
        text=str(tok.decode(list(best), clean_up_tokenization_spaces=False)),
        target=tgt.index, target_name=tgt.name, initial_ids=(first,) * length,
        loss_history=tuple(history), batch_loss_history=tuple(batch_history),
        slot_importance=importance, mean_prediction=mean_prediction,
        iterations_run=len(batch_history), stopped_early=stopped,
        vocabulary_size=int(vocab.size), parameters=parameters, evaluation=evaluation,
        wall_time_s=time.perf_counter() - started)


# ---------------------------------------------------------------------------- evaluation
def _interval(samples: np.ndarray, confidence: float) -> list[float]:
    tail = (1.0 - confidence) / 2.0
    return [float(np.quantile(samples, tail)), float(np.quantile(samples, 1.0 - tail))]


def evaluate_trigger(model: TextModel, trigger_ids: Sequence[int] | np.ndarray,
                     held_out_texts: Sequence[str], *, target: int | str,
                     n_random: int = MIN_RANDOM, random_state: int | None = 0,
                     n_boot: int = 1000, vocabulary: np.ndarray | Sequence[int] | None = None,
                     confidence: float = 0.95) -> dict[str, Any]:
    """Target rate of held-out inputs clean, with the trigger, and with random triggers.

    Parameters
    ----------
    model, target:
        As in :func:`search_trigger`. The *target rate* is the share of inputs whose
        predicted class is ``target`` (a causal LM: whose greedy continuation, scored with
        teacher forcing, is the target continuation); the *target probability* is the
        class probability (the probability of the whole continuation).
    trigger_ids:
        The trigger, inserted right after CLS/BOS.
    held_out_texts:
        Inputs not used in the search.
    n_random:
        Random triggers of the same length, each token drawn uniformly from
        ``vocabulary`` (at least 20).
    n_boot, confidence:
        Bootstrap resamples and the intervals' coverage. Each resample draws the held-out
        inputs with replacement and, for the random baseline, the random triggers too, so
        ``random_rate_ci`` and ``delta_ci`` carry the spread between random triggers as
        well as between inputs (percentile intervals).
    vocabulary:
        Where random triggers come from; :func:`trigger_vocabulary` by default. Use the
        search's vocabulary.

    Returns
    -------
    dict
        JSON-safe: ``clean_rate``, ``trigger_rate``, ``random_rate`` (mean over the random
        triggers) with ``*_ci`` intervals, ``*_probability`` means, ``delta = trigger_rate
        - random_rate`` with ``delta_ci``, and each random trigger with its rate.
    """
    model = checked_model(model)
    texts = checks.texts("held_out_texts", held_out_texts)
    tgt = resolve_target(model, target)
    raw = np.asarray(trigger_ids)
    n_tok = n_tokens(model)
    if (raw.ndim != 1 or not raw.size or raw.dtype.kind not in "iu"
            or raw.min() < 0 or raw.max() >= n_tok):
        raise InvalidInputError("trigger_ids", f"must be a non-empty list of token ids in "
                                f"[0, {n_tok})", trigger_ids)
    trigger = raw.astype(np.int64)
    if trigger.size > model.max_length // 2:
        raise InvalidInputError("trigger_ids", f"must hold at most {model.max_length // 2} "
                                "tokens (half of the model's max_length)", int(trigger.size))
    n_random = checks.integer("n_random", n_random, MIN_RANDOM)
    n_boot = checks.integer("n_boot", n_boot, 100)
    seed = checked_seed(random_state)
    if (isinstance(confidence, bool) or not isinstance(confidence, int | float)
            or not 0.0 < confidence < 1.0):
        raise InvalidInputError("confidence", "must lie strictly between 0 and 1", confidence)
    vocab = checked_vocabulary(model, vocabulary)
    rng = np.random.default_rng(seed)
    k, n = int(trigger.size), len(texts)

    clean = evaluate(model, build_template(model, texts, 0, tgt),
                      torch.zeros((1, 0), dtype=torch.long), tgt)
    slotted = build_template(model, texts, k, tgt)
    attacked = evaluate(model, slotted, torch.as_tensor(trigger).unsqueeze(0), tgt)
    draws = vocab[rng.integers(0, vocab.size, size=(n_random, k))]
    randoms = evaluate(model, slotted, torch.as_tensor(draws), tgt)

    def per_row(scores: Scores, m: int = 1) -> tuple[np.ndarray, np.ndarray]:
        hit = scores.hit.double().reshape(m, n).cpu().numpy()
        prob = scores.probability.double().reshape(m, n).cpu().numpy()
        return hit, prob

    clean_hit, clean_prob = per_row(clean)
    trig_hit, trig_prob = per_row(attacked)
    rand_hit, rand_prob = per_row(randoms, n_random)
    # Two-way bootstrap: resample the held-out inputs and, for the random baseline, the
    # random draws too (one draw that happens to hold a backdoor is real uncertainty).
    # Counts times 0/1 hits are exact integers: divide once, at the end.
    rows = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot)                 # (B, n)
    picks = rng.multinomial(n_random, np.full(n_random, 1.0 / n_random), size=n_boot)
    boot = {"clean": rows @ clean_hit[0] / n, "trigger": rows @ trig_hit[0] / n,
            "random": ((picks @ rand_hit) * rows).sum(axis=1) / (n * n_random)}
    boot["delta"] = boot["trigger"] - boot["random"]
    tok = model.tokenizer
    out: dict[str, Any] = {
        "trigger_ids": [int(t) for t in trigger],
        "trigger": str(tok.decode(trigger.tolist(), clean_up_tokenization_spaces=False)),
        "target": tgt.index, "target_name": tgt.name, "n_inputs": n,
        "clean_rate": float(clean_hit.mean()), "trigger_rate": float(trig_hit.mean()),
        "random_rate": float(rand_hit.mean()),
    }
    for name in ("clean", "trigger", "random"):
        out[f"{name}_rate_ci"] = _interval(boot[name], confidence)
    out["clean_probability"] = float(clean_prob.mean())
    out["trigger_probability"] = float(trig_prob.mean())
    out["random_probability"] = float(rand_prob.mean())
    out["delta"] = out["trigger_rate"] - out["random_rate"]
    out["delta_ci"] = _interval(boot["delta"], confidence)
    out["random_triggers"] = [[int(t) for t in d] for d in draws]
    out["random_trigger_texts"] = [str(t) for t in tok.batch_decode(
        draws.tolist(), clean_up_tokenization_spaces=False)]
    out["random_draw_rates"] = [float(r) for r in rand_hit.mean(axis=1)]
    out.update(n_random=n_random, n_boot=n_boot, confidence=float(confidence),
               random_state=seed, vocabulary_size=int(vocab.size))
    if not all(math.isfinite(v) for v in (out["clean_probability"],
                                          out["trigger_probability"],
                                          out["random_probability"])):
        raise InvalidInputError("model", "gave non-finite probabilities", "NaN")
    return out


# ---------------------------------------------------------------------------- report
def trigger_table(results: TriggerResult | Sequence[TriggerResult]) -> list[dict[str, Any]]:
    """One row per evaluated trigger for the audit report.

    Each row: ``trigger`` (text), ``target``, ``clean_rate``, ``trigger_rate``,
    ``random_rate`` with ``random_rate_ci``, ``delta`` with ``delta_ci``, ``n_inputs``.
    """
    items = [results] if isinstance(results, TriggerResult) else list(results)
    if not items or not all(isinstance(r, TriggerResult) for r in items):
        raise InvalidInputError("results", "must be one or more TriggerResult objects",
                                results)
    missing = [r.text for r in items if r.evaluation is None]
    if missing:
        raise InvalidInputError("results", "every trigger needs an evaluation (pass "
                                "held_out_texts to search_trigger)", missing)
    table: list[dict[str, Any]] = []
    for result in items:
        ev = result.evaluation or {}
        table.append({
            "trigger": result.text, "target": result.target_name,
            "clean_rate": ev["clean_rate"], "trigger_rate": ev["trigger_rate"],
            "random_rate": ev["random_rate"], "random_rate_ci": list(ev["random_rate_ci"]),
            "delta": ev["delta"], "delta_ci": list(ev["delta_ci"]),
            "n_inputs": ev["n_inputs"], "n_random": ev["n_random"],
        })
    return table
