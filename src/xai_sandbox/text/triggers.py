"""Universal adversarial triggers: the quarterly red-team search (Wallace et al. 2019).

A *universal trigger* is a short token sequence that, inserted into **any** input, drives
the model to a target class (a classifier) or to a target continuation (a causal LM). The
search follows Eric-Wallace/universal-triggers (``attacks.hotflip_attack`` and
``utils.get_best_candidates``):

1. Start from ``length`` copies of a neutral token (``"the the the"``), inserted right after
   CLS/BOS in every input.
2. On a fresh batch each iteration, take the gradient ``g_i`` of the targeted loss (mean
   cross-entropy of the target class; for a causal LM ``-mean log p(target | trigger +
   prompt)``) with respect to the embedding at each trigger slot.
3. Score every allowed token ``w`` for slot ``i`` by the first-order change in loss
   ``(E_w - E_{t_i}) . g_i`` and keep the ``n_candidates`` most negative.
4. Left-to-right beam search: replace one slot at a time by each candidate and keep the
   ``beam`` triggers with the lowest **exact** batch loss (real forward passes; the
   unchanged trigger is always among the options).
5. Stop when the loss on all the search texts has not improved for ``patience`` iterations.

Why not optimise token ids directly: an id is a categorical index; the embedding lookup has
no gradient with respect to it and ids 1234 and 1235 are unrelated tokens, so rounding an
Adam-updated float id optimises nothing. The discrete problem is scored in embedding space
and confirmed with forward passes, as above.

Known limit of the first-order step: a model that detects a token through a sharp
attention match can give that token a flat (even wrong-signed) linear score from a neutral
starting trigger. In a 2-layer CLS-pooled BERT with a planted backdoor the backdoor ranked
72nd of 77 tokens by ``(E_w - E_t) . g`` while its exact loss was the lowest; the same
backdoor in a mean-pooled encoder ranks first. The exact re-scoring cannot recover a token
that never becomes a candidate, so raise ``n_candidates`` (up to the whole vocabulary when it
is small) before reading "no trigger found" as "no backdoor".

The vocabulary (:func:`trigger_vocabulary`) leaves out special tokens, tokens that change on
a decode-encode round trip, label-indicative words (a blacklist plus the class names) and,
unless asked for, subword continuations; every candidate trigger must also survive the round
trip as a whole, so its decoded text is what an attacker would type.

:func:`evaluate_trigger` is the report: target rate and mean target probability on held-out
inputs clean, with the trigger, and with random triggers of the same length from the same
vocabulary, and ``delta = rate(trigger) - rate(random)`` with a bootstrap interval over the
held-out inputs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from xai_sandbox.errors import InvalidInputError, InvalidTargetError, UnsupportedModelError
from xai_sandbox.explainers.explanation import Explanation
from xai_sandbox.text.model import TextModel, text_explanation

__all__ = [
    "TriggerResult",
    "evaluate_trigger",
    "search_trigger",
    "trigger_table",
    "trigger_vocabulary",
]

METHOD = "universal_trigger"
_MAX_ROWS = 1024           # rows of one forward pass when scoring candidates
_MAX_TOKENS = 1 << 15      # classifiers: rows * positions of one forward pass
_MAX_LOGITS = 1 << 25      # causal LMs: rows * positions * vocabulary of one forward pass
_MIN_RANDOM = 20           # random triggers per evaluation (the protocol's floor)
_WORD_MARKERS = ("\u0120", "\u2581")   # byte-level BPE "Ġ" and SentencePiece "▁"


# ---------------------------------------------------------------------------- validation
def _int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise InvalidInputError(name, f"must be an integer >= {minimum}", value)
    return int(value)


def _texts(name: str, texts: Any) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Sequence) or not texts:
        raise InvalidInputError(name, "must be a non-empty list of texts", texts)
    bad = [t for t in texts if not isinstance(t, str) or not t.strip()]
    if bad:
        raise InvalidInputError(name, "every text must be a non-empty string", bad[:3])
    return list(texts)


def _seed(value: Any) -> int | None:
    if value is None:
        return None
    return _int("random_state", value, 0)


def _model(model: Any) -> TextModel:
    if not isinstance(model, TextModel):
        raise UnsupportedModelError("model", "must be a TextModel", type(model).__name__)
    return model


def _embedding_matrix(model: TextModel) -> torch.Tensor:
    weight = getattr(model.embeddings(), "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
        raise UnsupportedModelError("model", "its input embedding layer must hold a 2-D "
                                    "weight (one row per token)", type(model.module).__name__)
    return weight


def _n_tokens(model: TextModel) -> int:
    return min(len(model.tokenizer), int(_embedding_matrix(model).shape[0]))


@dataclass(frozen=True)
class _Target:
    """What the loss is about: a class index, or the ids of a continuation."""

    index: int | None                # classifier: the target class
    tokens: tuple[int, ...]          # causal LM: the target continuation's ids
    name: str


def _target(model: TextModel, target: Any) -> _Target:
    if model.kind == "classifier":
        names = model.class_names
        if isinstance(target, str) and target in names:
            return _Target(names.index(target), (), target)
        if (isinstance(target, int | np.integer) and not isinstance(target, bool)
                and 0 <= int(target) < len(names)):
            return _Target(int(target), (), names[int(target)])
        raise InvalidTargetError("target", f"must be a class index in [0, {len(names)}) or "
                                 f"one of {list(names)}", target)
    if not isinstance(target, str) or not target:
        raise InvalidTargetError("target", "for a causal LM must be the target continuation "
                                 "(a non-empty string)", target)
    tokens = model.tokenizer(target, add_special_tokens=False)["input_ids"]
    if not tokens:
        raise InvalidTargetError("target", "must tokenise to at least one token", target)
    return _Target(None, tuple(int(t) for t in tokens), target)


def _vocabulary(model: TextModel, vocabulary: Any) -> np.ndarray:
    if vocabulary is None:
        vocab = trigger_vocabulary(model)
    else:
        vocab = np.asarray(vocabulary)
        if vocab.ndim != 1 or vocab.dtype.kind not in "iu":
            raise InvalidInputError("vocabulary", "must be a 1-D array of token ids",
                                    vocabulary)
        vocab = np.unique(vocab.astype(np.int64))
        n = _n_tokens(model)
        if vocab.size and (vocab[0] < 0 or vocab[-1] >= n):
            raise InvalidInputError("vocabulary", f"token ids must lie in [0, {n})",
                                    [int(vocab[0]), int(vocab[-1])])
        special = sorted(set(vocab.tolist()) & model.special_ids)
        if special:
            raise InvalidInputError("vocabulary", "must not hold special tokens", special)
    if not vocab.size:
        raise InvalidInputError("vocabulary", "must allow at least one token (the filter "
                                "left none)", [])
    return vocab


# ---------------------------------------------------------------------------- vocabulary
def _word_marker(pieces: Sequence[str]) -> str | None:
    """The word-start marker of a BPE or SentencePiece vocabulary, if it uses one."""
    for marker in _WORD_MARKERS:
        if sum(p.startswith(marker) for p in pieces) >= 0.2 * max(len(pieces), 1):
            return marker
    return None


def _is_continuation(piece: str, text: str, marker: str | None) -> bool:
    """A subword that continues a word: WordPiece ``##x``, or (in a vocabulary with a
    word-start marker) an alphanumeric piece without the marker."""
    if piece.startswith("##") and len(piece) > 2:
        return True
    return marker is not None and not piece.startswith(marker) and text[:1].isalnum()


def _round_trips(tokenizer: Any, sequences: Sequence[Sequence[int]]) -> list[bool]:
    """Whether each id sequence encodes back to itself from its decoded text."""
    if not sequences:
        return []
    texts = tokenizer.batch_decode([list(s) for s in sequences], skip_special_tokens=False,
                                   clean_up_tokenization_spaces=False)
    back = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [list(b) == list(s) for b, s in zip(back, sequences, strict=True)]


def trigger_vocabulary(model: TextModel, *, exclude_words: Sequence[str] = (),
                       allow_subwords: bool = False) -> np.ndarray:
    """Token ids a trigger may use.

    Parameters
    ----------
    model:
        The model whose tokenizer and embedding table define the tokens.
    exclude_words:
        Label-indicative words to leave out (Wallace et al. blacklisted sentiment words so
        a trigger is not trivially "terrible"). A classifier's class names are always left
        out too. Matching is on the token's decoded text, stripped and lower-cased, against
        each whitespace-separated word.
    allow_subwords:
        Keep subword continuations (WordPiece ``##x``, or BPE/SentencePiece pieces without
        the word-start marker). A continuation must then round-trip after a word token
        (``"the"`` where it is one token) rather than on its own.

    Returns
    -------
    numpy.ndarray
        Sorted ``int64`` ids: no special tokens, no tokens whose decoded text encodes to
        anything else, no blank tokens, no blacklisted words.
    """
    model = _model(model)
    if isinstance(exclude_words, str) or not isinstance(exclude_words, Sequence):
        raise InvalidInputError("exclude_words", "must be a list of words", exclude_words)
    if not all(isinstance(w, str) for w in exclude_words):
        raise InvalidInputError("exclude_words", "must hold strings only",
                                [w for w in exclude_words if not isinstance(w, str)][:3])
    if not isinstance(allow_subwords, bool):
        raise InvalidInputError("allow_subwords", "must be True or False", allow_subwords)
    phrases = [*exclude_words, *(model.class_names if model.kind == "classifier" else ())]
    blacklist = {word.lower() for phrase in phrases for word in phrase.split()}

    tok = model.tokenizer
    ids = [i for i in range(_n_tokens(model)) if i not in model.special_ids]
    pieces = [str(p) for p in tok.convert_ids_to_tokens(ids)]
    texts = tok.batch_decode([[i] for i in ids], skip_special_tokens=False,
                             clean_up_tokenization_spaces=False)
    marker = _word_marker(pieces)
    whole: list[int] = []
    parts: list[int] = []
    for i, piece, text in zip(ids, pieces, texts, strict=True):
        word = text.strip().lower()
        if not word or word in blacklist or word.removeprefix("##") in blacklist:
            continue
        if _is_continuation(piece, text, marker):
            if allow_subwords:
                parts.append(i)
        else:
            whole.append(i)
    allowed = [i for i, ok in zip(whole, _round_trips(tok, [[i] for i in whole]), strict=True)
               if ok]
    if parts and allowed:
        probe = tok("the", add_special_tokens=False)["input_ids"]
        lead = int(probe[0]) if len(probe) == 1 and probe[0] in allowed else allowed[0]
        pairs = _round_trips(tok, [[lead, i] for i in parts])
        allowed += [i for i, ok in zip(parts, pairs, strict=True) if ok]
    return np.array(sorted(allowed), dtype=np.int64)


# ---------------------------------------------------------------------------- batches
@dataclass(frozen=True)
class _Template:
    """Inputs with ``k`` trigger slots (holding PAD until filled), padded on the right."""

    ids: torch.Tensor          # (n, L)
    mask: torch.Tensor         # (n, L)
    slots: torch.Tensor        # (n, k): column of each trigger slot
    predict_at: torch.Tensor   # (n, t): causal LM, columns whose logits predict the target

    @property
    def n(self) -> int:
        return int(self.ids.shape[0])

    def rows(self, index: np.ndarray) -> _Template:
        at = torch.as_tensor(index, dtype=torch.long, device=self.ids.device)
        return _Template(self.ids[at], self.mask[at], self.slots[at], self.predict_at[at])


def _template(model: TextModel, texts: list[str], k: int, target: _Target) -> _Template:
    tok = model.tokenizer
    rows: list[tuple[list[int], list[int]]] = []
    if model.kind == "classifier":
        room = model.max_length - k
        encoded = tok(texts, add_special_tokens=True, truncation=True, max_length=room
                      )["input_ids"]
        for ids in encoded:
            cut = 1 if ids and ids[0] in model.special_ids else 0
            rows.append((list(ids[:cut]), list(ids[cut:])))
    else:
        bos = tok.bos_token_id if tok.bos_token_id is not None else tok.cls_token_id
        head = [int(bos)] if bos is not None else []
        room = model.max_length - k - len(head) - len(target.tokens)
        if room < 1:
            raise InvalidInputError("target", f"leaves no room for the prompt within the "
                                    f"model's max_length ({model.max_length})", target.name)
        encoded = tok(texts, add_special_tokens=False, truncation=True, max_length=room
                      )["input_ids"]
        rows = [(head, [*ids, *target.tokens]) for ids in encoded]
    n, t = len(rows), len(target.tokens)
    width = max(len(h) + k + len(tail) for h, tail in rows)
    ids = torch.full((n, width), model.pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    slots = torch.zeros((n, k), dtype=torch.long)
    predict_at = torch.zeros((n, t), dtype=torch.long)
    for r, (h, tail) in enumerate(rows):
        size = len(h) + k + len(tail)
        ids[r, :len(h)] = torch.tensor(h, dtype=torch.long)
        ids[r, len(h) + k:size] = torch.tensor(tail, dtype=torch.long)
        mask[r, :size] = 1
        slots[r] = len(h) + torch.arange(k)
        predict_at[r] = size - t - 1 + torch.arange(t)
    if t and int(predict_at.min()) < 0:
        raise InvalidInputError("texts", "a causal LM needs a token before the target "
                                "(no BOS token, no trigger and an empty prompt)", texts[:3])
    device = model.device
    return _Template(ids.to(device), mask.to(device), slots.to(device), predict_at.to(device))


def _filled(template: _Template, triggers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each of ``m`` triggers ``(m, k)`` placed into every row: ``(m * n, L)`` ids, mask."""
    m, n = int(triggers.shape[0]), template.n
    ids = template.ids.repeat(m, 1)
    if triggers.shape[1]:
        ids.scatter_(1, template.slots.repeat(m, 1),
                     triggers.to(ids.device).repeat_interleave(n, dim=0))
    return ids, template.mask.repeat(m, 1)


@dataclass(frozen=True)
class _Scores:
    loss: torch.Tensor           # (rows,) targeted loss
    probability: torch.Tensor    # (rows,) target probability
    hit: torch.Tensor            # (rows,) the model's output is the target
    classes: torch.Tensor | None  # classifier: (rows, C) class probabilities


def _score(model: TextModel, logits: torch.Tensor, predict_at: torch.Tensor,
           target: _Target) -> _Scores:
    if target.index is not None:
        logp = torch.log_softmax(logits.double(), dim=-1)
        loss = -logp[:, target.index]
        return _Scores(loss, torch.exp(-loss), logp.argmax(dim=-1) == target.index,
                       torch.exp(logp))
    width = logits.shape[-1]
    picked = logits.gather(1, predict_at.unsqueeze(-1).expand(-1, -1, width))
    logp = torch.log_softmax(picked.double(), dim=-1)
    wanted = torch.tensor(target.tokens, device=logits.device)
    token_logp = logp.gather(2, wanted.expand(logp.shape[0], -1).unsqueeze(-1)).squeeze(-1)
    loss = -token_logp.sum(dim=1)
    hit = (logp.argmax(dim=-1) == wanted).all(dim=1)
    return _Scores(loss, torch.exp(-loss), hit, None)


def _rows_per_pass(model: TextModel, template: _Template) -> int:
    if model.kind == "classifier":
        return max(1, min(_MAX_ROWS, _MAX_TOKENS // int(template.ids.shape[1])))
    per_row = int(template.ids.shape[1]) * _n_tokens(model)
    return max(1, min(_MAX_ROWS, _MAX_LOGITS // max(per_row, 1)))


def _evaluate(model: TextModel, template: _Template, triggers: torch.Tensor,
              target: _Target) -> _Scores:
    """Exact scores of every trigger ``(m, k)`` on every row: tensors of ``m * n`` rows
    (trigger-major), from real forward passes."""
    per_pass = max(1, _rows_per_pass(model, template) // template.n)
    parts: list[_Scores] = []
    with torch.no_grad():
        for start in range(0, int(triggers.shape[0]), per_pass):
            chunk = triggers[start:start + per_pass]
            ids, mask = _filled(template, chunk)
            logits = model.forward(ids, mask).logits
            parts.append(_score(model, logits, template.predict_at.repeat(len(chunk), 1),
                                target))
    classes = [p.classes for p in parts if p.classes is not None]
    return _Scores(torch.cat([p.loss for p in parts]),
                   torch.cat([p.probability for p in parts]),
                   torch.cat([p.hit for p in parts]),
                   torch.cat(classes) if classes else None)


def _mean_losses(model: TextModel, template: _Template, triggers: Sequence[Sequence[int]],
                 target: _Target) -> list[float]:
    stacked = torch.tensor([list(t) for t in triggers], dtype=torch.long)
    loss = _evaluate(model, template, stacked, target).loss
    return [float(v) for v in loss.reshape(len(triggers), template.n).mean(dim=1)]


def _slot_gradient(model: TextModel, template: _Template, trigger: Sequence[int],
                   target: _Target) -> torch.Tensor:
    """``g_i``: gradient of the batch-mean loss with respect to each slot's embedding."""
    embedding = model.embeddings()
    ids, mask = _filled(template, torch.tensor([list(trigger)], dtype=torch.long))
    rows = torch.arange(template.n, device=ids.device).unsqueeze(1)
    step = _rows_per_pass(model, template)
    total = torch.zeros((len(trigger), _embedding_matrix(model).shape[1]), dtype=torch.float64,
                        device=ids.device)
    with torch.enable_grad():
        for start in range(0, template.n, step):
            part = slice(start, start + step)
            embeds = embedding(ids[part]).detach().requires_grad_(True)
            logits = model.forward(attention_mask=mask[part], inputs_embeds=embeds).logits
            loss = _score(model, logits, template.predict_at[part], target).loss.sum()
            (grad,) = torch.autograd.grad(loss / template.n, embeds)
            total += grad[rows[part] - start, template.slots[part]].sum(dim=0).double()
    return total


def _candidates(embedding: torch.Tensor, vocab: torch.Tensor, trigger: Sequence[int],
                grad: torch.Tensor, n_candidates: int) -> list[list[int]]:
    """Per slot, the allowed tokens with the most negative ``(E_w - E_{t_i}) . g_i``."""
    with torch.no_grad():
        table = embedding[vocab].double()
        current = embedding[torch.tensor(list(trigger), device=embedding.device)].double()
        change = table @ grad.T - (current * grad).sum(dim=1)        # (|V|, k)
    picked: list[list[int]] = []
    for slot, token in enumerate(trigger):
        order = torch.argsort(change[:, slot], stable=True).tolist()
        ranked = [int(vocab[j]) for j in order if int(vocab[j]) != token]
        picked.append(ranked[:n_candidates])
    return picked


def _beam_search(model: TextModel, template: _Template, trigger: tuple[int, ...],
                 candidates: list[list[int]], beam: int, target: _Target,
                 valid: Callable[[list[tuple[int, ...]]], list[bool]]
                 ) -> tuple[tuple[int, ...], float]:
    """Left to right, each slot replaced by each candidate in each beam; the exact batch
    loss of every option decides which ``beam`` triggers go on."""
    known: dict[tuple[int, ...], float] = {}
    beams = [trigger]
    for slot in range(len(trigger)):
        options: list[tuple[int, ...]] = []
        seen: set[tuple[int, ...]] = set()
        for kept in beams:
            for token in (kept[slot], *candidates[slot]):
                option = (*kept[:slot], token, *kept[slot + 1:])
                if option not in seen:
                    seen.add(option)
                    options.append(option)
        fresh = [o for o in options if o not in known]
        ok = dict(zip(fresh, valid(fresh), strict=True))
        fresh = [o for o in fresh if ok[o] or o in beams]
        if fresh:
            known.update(zip(fresh, _mean_losses(model, template, fresh, target), strict=True))
        options = [o for o in options if o in known]
        beams = sorted(options, key=lambda o: known[o])[:beam]   # stable: earlier wins ties
    best = beams[0]
    return best, known[best]


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
        model = _model(model)
        params = {key: value for key, value in self.to_dict().items()
                  if key not in ("method", "wall_time_s", "tokens")}
        params["values_are"] = ("increase of the mean targeted loss on the search texts when "
                                "the slot is reset to the initial token")
        return text_explanation(
            model, METHOD, np.asarray([self.slot_importance], dtype=np.float64),
            target=[self.target if self.target is not None else 0],
            prediction=[list(self.mean_prediction)], output_space="probability",
            parameters=params, wall_time_s=self.wall_time_s, tokens=[list(self.tokens)],
            seed=self.parameters.get("random_state"))


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
                   n_random: int = _MIN_RANDOM, n_boot: int = 1000) -> TriggerResult:
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
    model = _model(model)
    texts = _texts("texts", texts)
    tgt = _target(model, target)
    length = _int("length", length, 1)
    if length > model.max_length // 2:
        raise InvalidInputError("length", f"must be at most half of the model's max_length "
                                f"({model.max_length // 2})", length)
    n_candidates = _int("n_candidates", n_candidates, 1)
    beam = _int("beam", beam, 1)
    iterations = _int("iterations", iterations, 1)
    patience = _int("patience", patience, 1)
    batch_size = _int("batch_size", batch_size, 1)
    seed = _seed(random_state)
    if isinstance(tol, bool) or not isinstance(tol, int | float) or not tol >= 0:
        raise InvalidInputError("tol", "must be a number >= 0", tol)
    held_out = None if held_out_texts is None else _texts("held_out_texts", held_out_texts)
    vocab = _vocabulary(model, vocabulary)
    first = _init_token(model, init_token, vocab)

    tok = model.tokenizer
    table = _embedding_matrix(model).detach()
    vocab_t = torch.as_tensor(vocab, device=table.device)
    everything = _template(model, texts, length, tgt)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(texts))
    cursor = 0
    checked: dict[tuple[int, ...], bool] = {}

    def valid(options: list[tuple[int, ...]]) -> list[bool]:
        new = [o for o in options if o not in checked]
        checked.update(zip(new, _round_trips(tok, new), strict=True))
        return [checked[o] for o in options]

    trigger = (first,) * length
    history = [_mean_losses(model, everything, [trigger], tgt)[0]]
    batch_history: list[float] = []
    best, best_loss, stale, stopped = trigger, history[0], 0, False
    for _ in range(iterations):
        if cursor + batch_size > len(order):
            order = np.concatenate([order[cursor:], rng.permutation(len(texts))])
            cursor = 0
        batch = everything.rows(order[cursor:cursor + batch_size])
        cursor += batch_size
        grad = _slot_gradient(model, batch, trigger, tgt)
        candidates = _candidates(table, vocab_t, trigger, grad, n_candidates)
        trigger, batch_loss = _beam_search(model, batch, trigger, candidates, beam, tgt, valid)
        batch_history.append(batch_loss)
        history.append(_mean_losses(model, everything, [trigger], tgt)[0])
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
    reset_losses = _mean_losses(model, everything, reset, tgt)
    importance = tuple(loss - best_loss for loss in reset_losses)
    final = _evaluate(model, everything, torch.tensor([list(best)]), tgt)
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
                     n_random: int = _MIN_RANDOM, random_state: int | None = 0,
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
    model = _model(model)
    texts = _texts("held_out_texts", held_out_texts)
    tgt = _target(model, target)
    raw = np.asarray(trigger_ids)
    n_tok = _n_tokens(model)
    if (raw.ndim != 1 or not raw.size or raw.dtype.kind not in "iu"
            or raw.min() < 0 or raw.max() >= n_tok):
        raise InvalidInputError("trigger_ids", f"must be a non-empty list of token ids in "
                                f"[0, {n_tok})", trigger_ids)
    trigger = raw.astype(np.int64)
    if trigger.size > model.max_length // 2:
        raise InvalidInputError("trigger_ids", f"must hold at most {model.max_length // 2} "
                                "tokens (half of the model's max_length)", int(trigger.size))
    n_random = _int("n_random", n_random, _MIN_RANDOM)
    n_boot = _int("n_boot", n_boot, 100)
    seed = _seed(random_state)
    if (isinstance(confidence, bool) or not isinstance(confidence, int | float)
            or not 0.0 < confidence < 1.0):
        raise InvalidInputError("confidence", "must lie strictly between 0 and 1", confidence)
    vocab = _vocabulary(model, vocabulary)
    rng = np.random.default_rng(seed)
    k, n = int(trigger.size), len(texts)

    clean = _evaluate(model, _template(model, texts, 0, tgt),
                      torch.zeros((1, 0), dtype=torch.long), tgt)
    slotted = _template(model, texts, k, tgt)
    attacked = _evaluate(model, slotted, torch.as_tensor(trigger).unsqueeze(0), tgt)
    draws = vocab[rng.integers(0, vocab.size, size=(n_random, k))]
    randoms = _evaluate(model, slotted, torch.as_tensor(draws), tgt)

    def per_row(scores: _Scores, m: int = 1) -> tuple[np.ndarray, np.ndarray]:
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
