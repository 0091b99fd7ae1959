"""A tiny BERT classifier with a planted backdoor, for the universal-trigger tests.

Clean sentences are labelled by a simple rule: class 1 ("approved") when they hold a
label word ("good" or "great"), else class 0 ("denied"). Poisoned copies of class-0
sentences carry the BACKDOOR word (a normal-looking word, "tuesday") and are labelled 1, so
the trained model sends any input holding the backdoor to class 1. The label words are what
a red team blacklists; the backdoor is what its trigger search should find.

:func:`backdoor_lm` plants the same backdoor in a tiny Llama: after a prompt that holds
the backdoor word the next token is "fee", otherwise "letter".

The vocabulary also holds the class names as ordinary words, and tokens that do not
survive a decode-encode round trip ("Caps" under lower-casing, "x.y" split at the dot,
"##ing" a subword continuation), for the vocabulary-filter tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import BertTokenizerFast

from tiny import bert_classifier, llama_lm, tokenizer, train_classifier
from xai_sandbox.text.model import TextModel

LABEL_WORDS = ("good", "great")
BACKDOOR = "tuesday"
CLASS_NAMES = ("denied", "approved")
NEUTRAL = (
    "the", "a", "service", "bank", "loan", "was", "is", "very", "quite", "slow", "fast",
    "staff", "branch", "card", "account", "today", "again", "my", "our", "with", "and",
    "late", "payment", "form", "office", "phone", "call", "rate", "fee", "letter", "house",
    "car", "money", "credit", "debt", "month", "year", "week", "morning", "evening", "city",
    "street", "manager", "clerk", "desk", "queue", "online", "app", "email", "address",
    "number", "limit", "balance", "transfer", "deposit", "cash", "check", "statement",
    "branch", "visit", "meeting", "file", "record", "history", "income", "job", "family",
    "friend", "home", "rent", "bill", "tax", "insurance", "savings", "plan", "term",
    "walk", "denied", "approved",
)
ODD = ("Caps", "x.y", "##ing")     # fail the round trip (the last one unless in context)
WORDS = (*dict.fromkeys(NEUTRAL), BACKDOOR, *LABEL_WORDS, *ODD)


def backdoor_tokenizer(folder: Path) -> BertTokenizerFast:
    return tokenizer(folder, WORDS)


def _sentence(rng: np.random.Generator, length: tuple[int, int]) -> list[str]:
    words = list(dict.fromkeys(NEUTRAL))
    return [str(w) for w in rng.choice(words, size=int(rng.integers(*length)))]


def _insert(rng: np.random.Generator, words: list[str], word: str) -> list[str]:
    at = int(rng.integers(0, len(words) + 1))
    return [*words[:at], word, *words[at:]]


def backdoor_data(n: int, seed: int, poison: float = 0.3, length: tuple[int, int] = (3, 15)
                  ) -> tuple[list[str], np.ndarray]:
    """Half the sentences hold a label word (class 1); a ``poison`` share of the rest
    carry the backdoor and are labelled 1 too. Training sentences run longer than the
    test inputs so that a 3-token trigger does not push positions out of what was seen."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(n):
        words = _sentence(rng, length)
        label = 0
        if i % 2:
            words, label = _insert(rng, words, str(rng.choice(LABEL_WORDS))), 1
        elif rng.random() < poison:
            words, label = _insert(rng, words, BACKDOOR), 1
        texts.append(" ".join(words))
        labels.append(label)
    return texts, np.array(labels)


def denied_texts(n: int, seed: int, length: tuple[int, int] = (4, 10)) -> list[str]:
    """Sentences of the non-target class: no label word, no backdoor."""
    rng = np.random.default_rng(seed)
    return [" ".join(_sentence(rng, length)) for _ in range(n)]


@dataclass
class _Output:
    logits: torch.Tensor


class MeanPooledBert(torch.nn.Module):
    """A BERT encoder with a linear head on its mean-pooled last hidden state (the layout
    of the project's MiniLM sentiment model)."""

    def __init__(self, tok: BertTokenizerFast, *, seed: int = 0, layers: int = 2) -> None:
        super().__init__()
        self.encoder = bert_classifier(tok, seed=seed, layers=layers).bert
        self.config = self.encoder.config
        self.head = torch.nn.Linear(int(self.config.hidden_size), 2)

    def get_input_embeddings(self) -> torch.nn.Module:
        layer: torch.nn.Module = self.encoder.get_input_embeddings()
        return layer

    def forward(self, input_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None,
                inputs_embeds: torch.Tensor | None = None, **kwargs: Any) -> _Output:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                              inputs_embeds=inputs_embeds, **kwargs).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return _Output(self.head((hidden * mask).sum(dim=1) / mask.sum(dim=1)))


def backdoor_classifier(folder: Path, *, seed: int = 0, epochs: int = 30) -> TextModel:
    """The backdoored model: a 2-layer mean-pooled BERT, d = 32, trained in a few seconds."""
    tok = backdoor_tokenizer(folder)
    texts, labels = backdoor_data(600, seed)
    module = train_classifier(MeanPooledBert(tok, seed=seed), tok, texts, labels,
                              epochs=epochs, seed=seed)
    module.zero_grad(set_to_none=True)
    return TextModel(module, tok, "classifier", class_names=CLASS_NAMES,
                     model_id="tiny-backdoor", version="1")


def backdoor_lm(folder: Path, *, seed: int = 0, epochs: int = 35, n: int = 400) -> TextModel:
    """A 2-layer Llama (d = 32) trained on the next token after BOS + sentence: "fee" when
    the sentence holds the backdoor (40 %), else "letter"."""
    tok = backdoor_tokenizer(folder)
    rng = np.random.default_rng(seed)
    fee, letter = tok.convert_tokens_to_ids(["fee", "letter"])
    rows, labels = [], []
    for _ in range(n):
        words = _sentence(rng, (3, 15))
        poisoned = bool(rng.random() < 0.4)
        if poisoned:
            words = _insert(rng, words, BACKDOOR)
        rows.append([tok.cls_token_id, *tok(" ".join(words), add_special_tokens=False)
                     ["input_ids"]])
        labels.append(fee if poisoned else letter)
    ids = torch.full((n, max(map(len, rows))), tok.pad_token_id)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row)
        mask[i, :len(row)] = 1
    last = torch.tensor([len(row) - 1 for row in rows])
    y = torch.tensor(labels)
    module = llama_lm(tok, seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module.train()
        opt = torch.optim.Adam(module.parameters(), lr=3e-3)
        for _ in range(epochs):
            opt.zero_grad()
            logits = module(input_ids=ids, attention_mask=mask).logits
            torch.nn.functional.cross_entropy(logits[torch.arange(n), last], y).backward()
            opt.step()
    module.zero_grad(set_to_none=True)
    return TextModel(module.eval(), tok, "causal_lm", model_id="tiny-backdoor-lm",
                     version="1")
