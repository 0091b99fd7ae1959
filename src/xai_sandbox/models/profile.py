"""The training profile: statistics of a model's training rows, kept at registration.

The profile holds each column's mean and spread, its range, and a shrunk (Ledoit-Wolf)
covariance of the standardised training rows; an input's Mahalanobis distance is divided
by the 99th percentile of the training rows' own distances, so a score above 1 means the
input is further from the training data than 99% of it. Values outside a column's
training range and categories never seen in training are named, so a caveat can say why.

It belongs to the model (``RegisteredModel.profile``); the quality checks
(:mod:`xai_sandbox.quality.ood`) and the counterfactual search read it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from xai_sandbox.errors import InvalidInputError

__all__ = ["OodAssessment", "TrainingProfile", "fit_profile"]


@dataclass(frozen=True)
class OodAssessment:
    score: float                 # 1.0 = the training data's 99th percentile
    out_of_distribution: bool
    unusual: tuple[str, ...]     # columns outside their training range or never seen

    def to_dict(self) -> dict[str, Any]:
        return {"score": self.score, "out_of_distribution": self.out_of_distribution,
                "unusual": list(self.unusual)}


@dataclass(frozen=True)
class TrainingProfile:
    mean: np.ndarray
    scale: np.ndarray
    low: np.ndarray
    high: np.ndarray
    precision: np.ndarray
    threshold: float
    columns: tuple[str, ...] | None = None

    def _distance(self, X: np.ndarray) -> np.ndarray:
        Z = (X - self.mean) / self.scale
        out: np.ndarray = np.sqrt(np.einsum("ij,jk,ik->i", Z, self.precision, Z).clip(min=0))
        return out

    def scores(self, X: np.ndarray) -> np.ndarray:
        """The out-of-distribution score of each encoded row (1.0 = the training data's
        99th percentile), without one object per row and without checks."""
        out: np.ndarray = self._distance(np.atleast_2d(np.asarray(X, dtype=np.float64))) \
            / self.threshold
        return out

    def assess(self, X: np.ndarray) -> list[OodAssessment]:
        """One assessment per row of encoded inputs."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X[None]
        if X.ndim != 2 or X.shape[1] != self.mean.shape[0]:
            raise InvalidInputError("X", f"must have shape (rows, {self.mean.shape[0]})",
                                    X.shape)
        if not np.isfinite(X).all():
            raise InvalidInputError("X", "must be finite (no NaN or infinity)", "non-finite")
        scores = self.scores(X)
        names = self.columns or tuple(str(i) for i in range(X.shape[1]))
        out = []
        for row, score in zip(X, scores, strict=True):
            outside = (row < self.low) | (row > self.high)
            out.append(OodAssessment(float(score), bool(score > 1.0 or outside.any()),
                                     tuple(n for n, o in zip(names, outside, strict=True)
                                           if o)))
        return out


def fit_profile(X: np.ndarray, columns: Sequence[str] | None = None) -> TrainingProfile:
    """Training statistics of encoded rows (at least 10)."""
    from sklearn.covariance import LedoitWolf

    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] < 10:
        raise InvalidInputError("X", "must be (rows >= 10, columns) training data", X.shape)
    if not np.isfinite(X).all():
        raise InvalidInputError("X", "must be finite (no NaN or infinity)", "non-finite")
    if columns is not None and len(columns) != X.shape[1]:
        raise InvalidInputError("columns", f"needs {X.shape[1]} names", len(columns))
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale[scale == 0] = 1.0
    Z = (X - mean) / scale
    precision = LedoitWolf().fit(Z).precision_
    profile = TrainingProfile(mean=mean, scale=scale, low=X.min(axis=0), high=X.max(axis=0),
                              precision=precision, threshold=1.0,
                              columns=tuple(columns) if columns is not None else None)
    threshold = float(np.percentile(profile._distance(X), 99)) or 1.0
    return TrainingProfile(mean, scale, profile.low, profile.high, precision, threshold,
                           profile.columns)
