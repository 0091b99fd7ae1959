"""Scoring triggers: the batch template with trigger slots, the target's loss and success
rate, the slot gradients and the HotFlip candidates with beam re-scoring."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from xai_sandbox.errors import InvalidInputError
from xai_sandbox.text.model import TextModel
from xai_sandbox.text.triggers.vocabulary import (
    MAX_LOGITS,
    MAX_ROWS,
    MAX_TOKENS,
    Target,
    embedding_matrix,
    n_tokens,
)


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


def build_template(model: TextModel, texts: list[str], k: int, target: Target) -> _Template:
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
class Scores:
    loss: torch.Tensor           # (rows,) targeted loss
    probability: torch.Tensor    # (rows,) target probability
    hit: torch.Tensor            # (rows,) the model's output is the target
    classes: torch.Tensor | None  # classifier: (rows, C) class probabilities


def _score(model: TextModel, logits: torch.Tensor, predict_at: torch.Tensor,
           target: Target) -> Scores:
    if target.index is not None:
        logp = torch.log_softmax(logits.double(), dim=-1)
        loss = -logp[:, target.index]
        return Scores(loss, torch.exp(-loss), logp.argmax(dim=-1) == target.index,
                       torch.exp(logp))
    width = logits.shape[-1]
    picked = logits.gather(1, predict_at.unsqueeze(-1).expand(-1, -1, width))
    logp = torch.log_softmax(picked.double(), dim=-1)
    wanted = torch.tensor(target.tokens, device=logits.device)
    token_logp = logp.gather(2, wanted.expand(logp.shape[0], -1).unsqueeze(-1)).squeeze(-1)
    loss = -token_logp.sum(dim=1)
    hit = (logp.argmax(dim=-1) == wanted).all(dim=1)
    return Scores(loss, torch.exp(-loss), hit, None)


def _rows_per_pass(model: TextModel, template: _Template) -> int:
    if model.kind == "classifier":
        return max(1, min(MAX_ROWS, MAX_TOKENS // int(template.ids.shape[1])))
    per_row = int(template.ids.shape[1]) * n_tokens(model)
    return max(1, min(MAX_ROWS, MAX_LOGITS // max(per_row, 1)))


def evaluate(model: TextModel, template: _Template, triggers: torch.Tensor,
              target: Target) -> Scores:
    """Exact scores of every trigger ``(m, k)`` on every row: tensors of ``m * n`` rows
    (trigger-major), from real forward passes."""
    per_pass = max(1, _rows_per_pass(model, template) // template.n)
    parts: list[Scores] = []
    with torch.no_grad():
        for start in range(0, int(triggers.shape[0]), per_pass):
            chunk = triggers[start:start + per_pass]
            ids, mask = _filled(template, chunk)
            logits = model.forward(ids, mask).logits
            parts.append(_score(model, logits, template.predict_at.repeat(len(chunk), 1),
                                target))
    classes = [p.classes for p in parts if p.classes is not None]
    return Scores(torch.cat([p.loss for p in parts]),
                   torch.cat([p.probability for p in parts]),
                   torch.cat([p.hit for p in parts]),
                   torch.cat(classes) if classes else None)


def mean_losses(model: TextModel, template: _Template, triggers: Sequence[Sequence[int]],
                 target: Target) -> list[float]:
    stacked = torch.tensor([list(t) for t in triggers], dtype=torch.long)
    loss = evaluate(model, template, stacked, target).loss
    return [float(v) for v in loss.reshape(len(triggers), template.n).mean(dim=1)]


def slot_gradient(model: TextModel, template: _Template, trigger: Sequence[int],
                   target: Target) -> torch.Tensor:
    """``g_i``: gradient of the batch-mean loss with respect to each slot's embedding."""
    embedding = model.embeddings()
    ids, mask = _filled(template, torch.tensor([list(trigger)], dtype=torch.long))
    rows = torch.arange(template.n, device=ids.device).unsqueeze(1)
    step = _rows_per_pass(model, template)
    total = torch.zeros((len(trigger), embedding_matrix(model).shape[1]), dtype=torch.float64,
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


def candidate_swaps(embedding: torch.Tensor, vocab: torch.Tensor, trigger: Sequence[int],
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


def beam_search(model: TextModel, template: _Template, trigger: tuple[int, ...],
                 candidates: list[list[int]], beam: int, target: Target,
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
            known.update(zip(fresh, mean_losses(model, template, fresh, target), strict=True))
        options = [o for o in options if o in known]
        beams = sorted(options, key=lambda o: known[o])[:beam]   # stable: earlier wins ties
    best = beams[0]
    return best, known[best]
