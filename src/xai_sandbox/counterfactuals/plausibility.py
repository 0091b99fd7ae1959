"""How far a counterfactual is from real people: neighbour distance and OOD scores.

The neighbour distance of a row is the mean distance to its ``k`` nearest reference rows
(real training applicants with the desired outcome), in the schema's standardised space:
each numeric feature's change over its training standard deviation, plus 1 for each
categorical feature whose code differs. A counterfactual close to real approved
applicants describes someone who exists; one far from all of them does not. The
benchmark reports the same number for every method it compares.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from xai_sandbox.errors import InvalidInputError
from xai_sandbox.models.profile import TrainingProfile
from xai_sandbox.models.schema import FeatureSchema

__all__ = ["column_weights", "neighbour_distance", "ood_scores"]


def column_weights(schema: FeatureSchema, scale: Mapping[str, float]) -> np.ndarray:
    """Per encoded column, the weight that turns an L1 distance between encoded rows into
    the standardised distance: 1/std for a numeric column, 1/2 for each one-hot column (a
    switch changes two of them)."""
    weights = np.zeros(len(schema.columns))
    for spec, cols in zip(schema.features, schema.groups, strict=True):
        if spec.kind == "numeric":
            weights[cols[0]] = 1.0 / (scale.get(spec.name) or 1.0)
        else:
            weights[list(cols)] = 0.5
    return weights


def neighbour_distance(X: np.ndarray, reference: np.ndarray, weights: np.ndarray,
                       k: int = 5) -> np.ndarray:
    """Mean standardised distance of each row of ``X`` to its ``k`` nearest rows of
    ``reference`` (all of them when there are fewer than ``k``)."""
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    reference = np.atleast_2d(np.asarray(reference, dtype=np.float64))
    if reference.shape[0] == 0:
        raise InvalidInputError("reference", "needs at least one row", reference.shape)
    if X.shape[1] != reference.shape[1] or weights.shape != (X.shape[1],):
        raise InvalidInputError("X", f"must have {reference.shape[1]} columns like the "
                                "reference and the weights", X.shape)
    from scipy.spatial.distance import cdist

    k = min(int(k), reference.shape[0])
    d = cdist(X * weights, reference * weights, metric="cityblock")
    out: np.ndarray = np.partition(d, k - 1, axis=1)[:, :k].mean(axis=1)
    return out


def ood_scores(profile: TrainingProfile, X: np.ndarray) -> np.ndarray:
    """The profile's out-of-distribution score of many encoded rows at once (the same
    number :meth:`TrainingProfile.assess` gives, without one object per row)."""
    return profile.scores(X)
