"""What a suggested change may do, learned from the training rows: actionable limits.

A counterfactual is only useful to a person if they could act on it and if it describes
someone the training data actually shows. :class:`ActionConstraints` holds, per numeric
feature, the range a new value must stay within (by default the training data's 1st-99th
percentile, inside the schema's bounds) and a cap on the relative change (by default 50%
of the current value); per categorical feature, the codes training rows have (no change
reaches an unseen one) and, optionally, the order of its codes from worst to best, so a
change may only move towards a better code; and the training profile
whose out-of-distribution score every option is checked against. It also keeps the
encoded training rows (and, where known, their outcomes), so an option's distance to the
nearest real applicants with the desired outcome can be reported.

Build it once per model with :meth:`ActionConstraints.from_training` and pass it to
:func:`~xai_sandbox.counterfactuals.find_counterfactuals`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from xai_sandbox.errors import InvalidInputError, number_in
from xai_sandbox.models.profile import TrainingProfile, fit_profile
from xai_sandbox.models.schema import FeatureSchema, FeatureSpec

__all__ = ["DEFAULT_MAX_OOD_SCORE", "DEFAULT_NEIGHBOURS", "DEFAULT_PERCENTILES",
           "DEFAULT_RELATIVE_CHANGE", "ActionConstraints"]

DEFAULT_PERCENTILES = (1.0, 99.0)
DEFAULT_RELATIVE_CHANGE = 0.5
DEFAULT_MAX_OOD_SCORE = 1.0
DEFAULT_NEIGHBOURS = 5


@dataclass(frozen=True, eq=False)
class ActionConstraints:
    """Limits on every suggested change, from training data (see the module docstring).

    Attributes
    ----------
    low, high:
        Numeric feature -> the range a changed value must lie in (training percentiles
        intersected with the schema's bounds).
    typical:
        Numeric feature -> the median absolute training value: the base of the relative
        cap when the current value is zero (so zero is not stuck).
    integral:
        Numeric feature -> whether every training value is a whole number (changed values
        are then whole numbers too).
    scale:
        Numeric feature -> its training standard deviation (1 where constant): the unit of
        the costs and distances.
    max_relative_change:
        Numeric feature -> the largest ``|after - before| / |before|`` allowed
        (``math.inf``: no cap).
    category_order:
        Categorical feature -> its codes from worst to best. A change of such a feature
        must move to a strictly better listed code; codes not listed are neither left nor
        reached. Categorical features without an order may switch to any code.
    seen:
        Categorical feature -> the codes some training row has: a change never reaches a
        code the training data does not show.
    profile:
        The out-of-distribution profile every option is scored with.
    max_ood_score:
        An option scoring above this (and above the applicant's own score) is dropped as
        implausible; 1.0 is the training rows' own 99th percentile.
    reference, outcomes:
        Encoded training rows and, where known, their class indices: the applicants an
        option's neighbour distance is measured to.
    neighbours:
        How many nearest real applicants with the desired outcome that distance averages.
    percentiles:
        The training percentiles ``low`` and ``high`` were taken at.
    """

    low: Mapping[str, float]
    high: Mapping[str, float]
    typical: Mapping[str, float]
    integral: Mapping[str, bool]
    scale: Mapping[str, float]
    max_relative_change: Mapping[str, float]
    category_order: Mapping[str, tuple[str, ...]]
    seen: Mapping[str, frozenset[str]]
    profile: TrainingProfile
    reference: np.ndarray
    outcomes: np.ndarray | None = None
    max_ood_score: float = DEFAULT_MAX_OOD_SCORE
    neighbours: int = DEFAULT_NEIGHBOURS
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES

    @classmethod
    def from_training(cls, X: np.ndarray, schema: FeatureSchema, *,
                      outcomes: Sequence[int] | np.ndarray | None = None,
                      percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
                      max_relative_change: Mapping[str, float] | None = None,
                      default_relative_change: float = DEFAULT_RELATIVE_CHANGE,
                      category_order: Mapping[str, Sequence[str]] | None = None,
                      profile: TrainingProfile | None = None,
                      max_ood_score: float = DEFAULT_MAX_OOD_SCORE,
                      neighbours: int = DEFAULT_NEIGHBOURS) -> ActionConstraints:
        """Limits learned from encoded training rows ``X`` (at least 10) of ``schema``.

        Parameters
        ----------
        outcomes:
            The class index of each training row (its real outcome). Without it, the
            neighbour distance is measured to the rows the model itself puts in the
            desired class.
        percentiles:
            ``(low, high)`` in [0, 100]: a changed numeric value stays within these
            training percentiles (default the 1st and 99th).
        max_relative_change, default_relative_change:
            Per numeric feature, the largest relative change (0.5: at most half the
            current value up or down; ``math.inf``: uncapped); features not named get the
            default (0.5).
        category_order:
            Categorical feature -> codes from worst to best (see the class docstring); it
            adds to, and for the features it names replaces, the schema's own ``order``.
        profile:
            The model's training profile (``RegisteredModel.profile``); fitted on ``X``
            when not given.
        max_ood_score:
            Options scoring above it (and above the applicant) are dropped (default 1.0).
        neighbours:
            k of the neighbour distance (default 5).
        """
        X = np.asarray(X, dtype=np.float64)
        width = len(schema.columns)
        if X.ndim != 2 or X.shape[1] != width or X.shape[0] < 10:
            raise InvalidInputError("X", f"must be encoded training rows of shape "
                                    f"(rows >= 10, {width})", X.shape)
        if not np.isfinite(X).all():
            raise InvalidInputError("X", "must be finite (no NaN or infinity)", "non-finite")
        if (not isinstance(percentiles, Sequence) or len(percentiles) != 2
                or not all(isinstance(p, int | float) and not isinstance(p, bool)
                           for p in percentiles)
                or not 0 <= percentiles[0] < percentiles[1] <= 100):
            raise InvalidInputError("percentiles", "must be (low, high) with "
                                    "0 <= low < high <= 100", percentiles)
        number_in(default_relative_change, 0.0, math.inf, "default_relative_change")
        number_in(max_ood_score, 0.0, math.inf, "max_ood_score")
        number_in(neighbours, 1, X.shape[0], "neighbours", integer=True)
        numeric = [f for f in schema.features if f.kind == "numeric"]
        caps = _caps(max_relative_change or {}, schema, default_relative_change)
        # The schema's own order (worse to better, where it gives one), then the argument's.
        order = {f.name: tuple(getattr(f, "order", ()) or ()) for f in schema.features
                 if f.kind == "categorical" and getattr(f, "order", None)}
        order.update(_orders(category_order or {}, schema))
        labels = None
        if outcomes is not None:
            labels = np.asarray(outcomes)
            if labels.shape != (X.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
                raise InvalidInputError("outcomes", f"must be {X.shape[0]} class indices, "
                                        "one per training row", labels.shape)
        if profile is None:
            profile = fit_profile(X, schema.columns)
        elif profile.mean.shape != (width,):
            raise InvalidInputError("profile", f"must describe {width} columns",
                                    profile.mean.shape)
        index = dict(zip(schema.names, schema.groups, strict=True))
        seen = {f.name: frozenset(c for c, n in zip(f.category_codes(),
                                                    X[:, list(index[f.name])].sum(axis=0),
                                                    strict=True) if n > 0)
                for f in schema.features if f.kind == "categorical"}
        low, high, typical, integral, scale = {}, {}, {}, {}, {}
        for spec in numeric:
            column = X[:, index[spec.name][0]]
            lo, hi = (float(v) for v in np.percentile(column, percentiles))
            if spec.bounds is not None:
                lo, hi = max(lo, spec.bounds[0]), min(hi, spec.bounds[1])
            low[spec.name], high[spec.name] = lo, hi
            typical[spec.name] = float(np.median(np.abs(column))) or 1.0
            integral[spec.name] = bool(np.all(np.mod(column, 1) == 0))
            scale[spec.name] = float(np.std(column)) or 1.0
        return cls(low=low, high=high, typical=typical, integral=integral, scale=scale,
                   max_relative_change=caps, category_order=order, seen=seen,
                   profile=profile,
                   reference=X, outcomes=labels, max_ood_score=float(max_ood_score),
                   neighbours=int(neighbours),
                   percentiles=(float(percentiles[0]), float(percentiles[1])))

    # ------------------------------------------------------------------ rules
    def numeric_range(self, spec: FeatureSpec, value: float) -> tuple[float, float]:
        """The interval a new value of numeric ``spec`` (now ``value``) must lie in: the
        percentile range, the relative cap around ``value`` and the monotone side. Empty
        (low > high) when no change is allowed."""
        name = spec.name
        low, high = self.low[name], self.high[name]
        cap = self.max_relative_change[name]
        if math.isfinite(cap):
            base = abs(value) or self.typical[name]
            low, high = max(low, value - cap * base), min(high, value + cap * base)
        if spec.monotone == "increasing":   # more of it raises risk: never raise it
            high = min(high, value)
        elif spec.monotone == "decreasing":  # more of it lowers risk: never lower it
            low = max(low, value)
        if self.integral[name]:
            low, high = float(math.ceil(low - 1e-9)), float(math.floor(high + 1e-9))
        return low, high

    def category_allowed(self, feature: str, before: str, after: str) -> bool:
        """Whether switching ``feature`` from ``before`` to ``after`` is allowed: to a code
        some training row has, and towards better where the feature has an order."""
        if before == after or after not in self.seen.get(feature, ()):
            return False
        order = self.category_order.get(feature)
        if order is None:
            return True
        return before in order and after in order and order.index(after) > order.index(before)

    def to_dict(self) -> dict[str, Any]:
        """The limits as plain JSON data (an uncapped feature's cap is null)."""
        return {"percentiles": list(self.percentiles),
                "numeric_ranges": {n: [self.low[n], self.high[n]] for n in self.low},
                "max_relative_change": {n: (c if math.isfinite(c) else None)
                                        for n, c in self.max_relative_change.items()},
                "category_order": {n: list(o) for n, o in self.category_order.items()},
                "max_ood_score": self.max_ood_score,
                "neighbour_distance": {
                    "k": self.neighbours,
                    "to": "training applicants with the desired outcome"
                          if self.outcomes is not None else
                          "training applicants the model puts in the desired class",
                    "space": "numeric change over the training standard deviation, plus 1 "
                             "per changed category"}}


def _caps(raw: Mapping[str, float], schema: FeatureSchema, default: float
          ) -> dict[str, float]:
    if not isinstance(raw, Mapping):
        raise InvalidInputError("max_relative_change", "must be a mapping of numeric "
                                "feature to a cap", raw)
    numeric = [f.name for f in schema.features if f.kind == "numeric"]
    unknown = sorted(set(raw) - set(numeric))
    if unknown:
        raise InvalidInputError("max_relative_change", f"names numeric features only "
                                f"(known: {numeric})", unknown)
    for name, cap in raw.items():
        number_in(cap, 0.0, math.inf, f"max_relative_change.{name}")
    return {n: float(raw.get(n, default)) for n in numeric}


def _orders(raw: Mapping[str, Sequence[str]], schema: FeatureSchema
            ) -> dict[str, tuple[str, ...]]:
    if not isinstance(raw, Mapping):
        raise InvalidInputError("category_order", "must be a mapping of categorical feature "
                                "to its codes from worst to best", raw)
    categorical = [f.name for f in schema.features if f.kind == "categorical"]
    out = {}
    for name, codes in raw.items():
        if name not in categorical:
            raise InvalidInputError("category_order", f"names categorical features only "
                                    f"(known: {categorical})", name)
        known = schema.feature(name).category_codes()
        if (isinstance(codes, str) or not isinstance(codes, Sequence) or len(codes) < 2
                or len(set(codes)) != len(codes) or not set(codes) <= set(known)):
            raise InvalidInputError(f"category_order.{name}", f"must list at least two "
                                    f"distinct codes of {list(known)}, worst first", codes)
        out[name] = tuple(codes)
    return out
