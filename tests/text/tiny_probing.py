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

from tiny import KEYWORD, keyword_data, presence_classifier, tokenizer
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
    return keyword_data(n, seed, length, WORDS)


def long_keyword_classifier(folder: Path, *, seed: int = 0) -> TextModel:
    """A 2-layer BERT (d = 32) trained on :func:`long_keyword_data`."""
    return presence_classifier(long_tokenizer(folder), *long_keyword_data(400, seed),
                               "tiny-long-keyword", seed=seed)
