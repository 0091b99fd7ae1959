"""Tiny models and planted answers for the attention-rollout tests.

The behaviour check follows Abnar & Zuidema (2020): on a subject-verb agreement task in
miniature, rank each input token by *blank-out* importance (replace it with ``[UNK]``,
record the drop in the predicted class's probability) and see whether rollout or raw
last-layer attention ranks the tokens more like it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from tiny import bert_classifier, tokenizer, train_classifier
from xai_sandbox.text.model import TextModel

SINGULAR = ("bank", "loan", "card", "account", "letter", "form", "office", "phone", "fee",
            "rate")
PLURAL = tuple(w + "s" for w in SINGULAR)
LEAD = ("today", "again", "and", "very", "quite", "late", "so", "then")
DETERMINER = ("the", "my", "our", "a")
LINK = ("of", "near", "with", "for")
AGREEMENT_WORDS = (*SINGULAR, *PLURAL, *LEAD, *DETERMINER, *LINK)


def agreement_data(n: int, seed: int, *, lead: tuple[int, int] = (0, 5),
                   attractors: tuple[int, int] = (1, 3)) -> tuple[list[str], np.ndarray]:
    """Subject-verb agreement in miniature (the task of Abnar & Zuidema's model): the label
    is the number of the *first* noun (the subject; 1 = plural), which comes after a run of
    ``lead`` words, so it sits away from CLS, and is followed by prepositional phrases whose
    nouns (attractors) have random number."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        words = [str(w) for w in rng.choice(LEAD, size=int(rng.integers(*lead)))]
        words += [str(rng.choice(DETERMINER)), str(rng.choice(PLURAL if label else SINGULAR))]
        for _ in range(int(rng.integers(*attractors))):
            words += [str(rng.choice(LINK)), str(rng.choice(DETERMINER)),
                      str(rng.choice(SINGULAR + PLURAL))]
        texts.append(" ".join(words))
        labels.append(label)
    return texts, np.array(labels)


def agreement_classifier(folder: Path, *, layers: int = 4, n_train: int = 400,
                         epochs: int = 40, seed: int = 0) -> TextModel:
    """A ``layers``-deep BERT (d = 32, 4 heads) trained on :func:`agreement_data`."""
    tok = tokenizer(folder, AGREEMENT_WORDS)
    texts, labels = agreement_data(n_train, seed)
    model = train_classifier(bert_classifier(tok, layers=layers, seed=seed), tok, texts,
                             labels, epochs=epochs, seed=seed)
    return TextModel(model, tok, "classifier", class_names=("singular", "plural"),
                     model_id="tiny-agreement", version="1")


def blank_out(model: TextModel, text: str) -> tuple[np.ndarray, np.ndarray]:
    """Blank-out importance of each non-special token of ``text``.

    Returns the token positions and, for each, ``p(c | text) - p(c | text with that token
    replaced by [UNK])`` where ``c`` is the predicted class.
    """
    enc = model.encode(text)
    ids = enc.input_ids[0]
    real = np.flatnonzero(~enc.special[0])
    variants = ids.repeat(len(real), 1)
    variants[torch.arange(len(real)), torch.as_tensor(real)] = model.tokenizer.unk_token_id
    with torch.no_grad():
        full = torch.softmax(model.logits(enc.input_ids).double(), dim=-1)[0]
        label = int(full.argmax())
        blanked = torch.softmax(model.logits(variants).double(), dim=-1)[:, label]
    return real, (full[label] - blanked).numpy()



def sharpen(module: torch.nn.Module, factor: float = 6.0) -> torch.nn.Module:
    """Scale the query and key projections of a randomly initialised model so that its
    attention is far from uniform (initial weights give nearly uniform attention)."""
    with torch.no_grad():
        for name, sub in module.named_modules():
            if name.rsplit(".", 1)[-1] in ("query", "key", "q_proj", "k_proj") and isinstance(
                    sub, torch.nn.Linear):
                sub.weight.mul_(factor)
    return module


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread for the block, then restore the previous count.

    Training the tiny models on this shared two-core machine is several times faster on
    one thread than on two when other processes load the cores (no spinning workers)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
