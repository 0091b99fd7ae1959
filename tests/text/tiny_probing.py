"""Data and a trained model for the probing tests.

The latent is whether the planted keyword occurs anywhere in a *long* text over a *large*
vocabulary. A randomly initialised encoder represents a text roughly as an average of its
word vectors; with 200 word types in 32 dimensions and 20-30 words a text, the keyword's
share of that average is drowned by the other words, so a linear probe reads the latent
poorly. A trained encoder attends to the keyword and carries the latent at its CLS token.
(With the 30-word vocabulary and short texts of ``tiny.keyword_data`` the random-init
model's CLS already gives about 96 % probe accuracy: bag-of-words properties of short
texts are linearly readable from random features, which is why the control exists.)
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
from transformers import BertTokenizerFast

from tiny import KEYWORD, bert_classifier, tokenizer, train_classifier
from xai_sandbox.text.model import TextModel

_SYLLABLES = ["".join(p) for p in itertools.product("bdfgklmnprstv", "aeiou")]
# 200 made-up two-syllable words (fixed), none of them the keyword.
WORDS = tuple(sorted(np.random.default_rng(0).choice(
    [a + b for a, b in itertools.product(_SYLLABLES, _SYLLABLES)], 200, replace=False)))


def long_tokenizer(folder: Path) -> BertTokenizerFast:
    return tokenizer(folder, (*WORDS, KEYWORD))


def long_keyword_data(n: int, seed: int, length: tuple[int, int] = (20, 30)
                      ) -> tuple[list[str], np.ndarray]:
    """Texts of 20-29 made-up words; odd rows carry the keyword at a random place."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(n):
        words = [str(w) for w in rng.choice(WORDS, size=int(rng.integers(*length)))]
        label = i % 2
        if label:
            words.insert(int(rng.integers(0, len(words) + 1)), KEYWORD)
        texts.append(" ".join(words))
        labels.append(label)
    return texts, np.array(labels)


def long_keyword_classifier(folder: Path, *, seed: int = 0) -> TextModel:
    """A 2-layer BERT (d = 32) trained on :func:`long_keyword_data`."""
    tok = long_tokenizer(folder)
    texts, labels = long_keyword_data(400, seed)
    model = train_classifier(bert_classifier(tok, seed=seed), tok, texts, labels, seed=seed)
    return TextModel(model, tok, "classifier", class_names=("absent", "present"),
                     model_id="tiny-long-keyword", version="1")
