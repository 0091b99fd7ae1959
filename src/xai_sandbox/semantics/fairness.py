"""Fairness of a tabular model against its protected features.

- :func:`counterfactual_fairness`: change only the protected attribute of each applicant
  (every other category, or for a number every decile of the training data) and count how
  often the decision changes. A model that does not use the attribute flips nothing.
- :func:`protected_share`: the mean share of the attribution that falls on protected
  features and on their likely proxies, over many explanations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from xai_sandbox.errors import InvalidInputError, UnsupportedModelError
from xai_sandbox.explainers.explanation import Explanation
from xai_sandbox.models.registry import RegisteredModel

__all__ = ["counterfactual_fairness", "likely_proxies", "protected_share"]


def _decisions(model: RegisteredModel, X: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.asarray(model.adapter.predict(X)).argmax(axis=1)
    return out


def counterfactual_fairness(model: RegisteredModel, rows: Sequence[Mapping[str, Any]], *,
                            features: Sequence[str] | None = None,
                            data: np.ndarray | None = None) -> dict[str, dict[str, Any]]:
    """Per protected feature: the share of ``rows`` whose decision changes when only that
    feature takes another value, and which values changed it most."""
    schema = model.schema
    if schema is None or model.adapter.input_kind != "tabular":
        raise UnsupportedModelError("model", "needs a tabular model with a feature schema",
                                    model.model_id)
    if not rows:
        raise InvalidInputError("rows", "must hold at least one applicant", rows)
    names = list(features) if features is not None else [
        f.name for f in schema.features if f.protected]
    unknown = [n for n in names if n not in schema.names]
    if unknown:
        raise InvalidInputError("features", "must be features of the schema", unknown)
    base = _decisions(model, schema.encode(list(rows)))
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        spec = schema.feature(name)
        if spec.kind == "categorical":
            values: list[Any] = list(spec.category_codes())
        else:
            column = (data[:, list(schema.columns).index(name)] if data is not None
                      else np.array([float(r[name]) for r in rows]))
            values = sorted({float(v) for v in np.quantile(column, np.linspace(0.05, 0.95, 10))})
        flipped = np.zeros(len(rows), dtype=bool)
        by_value = {}
        for value in values:
            changed = [dict(r, **{name: value}) for r in rows]
            moved = _decisions(model, schema.encode(changed)) != base
            same = np.array([r[name] == value for r in rows])
            moved &= ~same
            flipped |= moved
            by_value[str(value)] = float(moved.mean())
        out[name] = {"flip_rate": float(flipped.mean()), "n": len(rows),
                     "by_value": by_value, "values_tried": len(values)}
    return out


def protected_share(explanations: Sequence[Explanation] | Explanation,
                    protected: Sequence[str]) -> dict[str, Any]:
    """Mean share of the absolute attribution on ``protected`` features, over every row
    of the explanations given (one value per feature: grouped explanations)."""
    runs = [explanations] if isinstance(explanations, Explanation) else list(explanations)
    shares: list[float] = []
    per_feature: dict[str, list[float]] = {p: [] for p in protected}
    for e in runs:
        names = list(e.feature_names or ())
        missing = [p for p in protected if p not in names]
        if missing:
            raise InvalidInputError("protected", "must be features of the explanation",
                                    missing)
        values = np.abs(np.asarray(e.values, dtype=np.float64)).reshape(e.values.shape[0], -1)
        totals = values.sum(axis=1)
        totals[totals == 0] = 1.0
        for p in protected:
            per_feature[p] += list(values[:, names.index(p)] / totals)
        shares += list(sum(values[:, names.index(p)] for p in protected) / totals)
    return {"mean_share": float(np.mean(shares)), "max_share": float(np.max(shares)),
            "by_feature": {p: float(np.mean(v)) for p, v in per_feature.items()},
            "rows": len(shares)}


def _codes(values: Sequence[Any]) -> np.ndarray:
    """Integer codes of a column (categories as they are, numbers by quintile)."""
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        numbers = np.asarray(values, dtype=np.float64)
        edges = np.unique(np.quantile(numbers, [0.2, 0.4, 0.6, 0.8]))
        return np.searchsorted(edges, numbers, side="right")
    _, inverse = np.unique(np.asarray([str(v) for v in values]), return_inverse=True)
    return np.asarray(inverse)


def _cramers_v(a: np.ndarray, b: np.ndarray) -> float:
    table = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(table, (a, b), 1)
    table = table[table.sum(axis=1) > 0][:, table.sum(axis=0) > 0]
    n = table.sum()
    if min(table.shape) < 2:
        return 0.0
    expected = table.sum(axis=1, keepdims=True) @ table.sum(axis=0, keepdims=True) / n
    chi2 = float(((table - expected) ** 2 / expected).sum())
    return float(np.sqrt(chi2 / (n * (min(table.shape) - 1))))


def likely_proxies(schema: Any, rows: Sequence[Mapping[str, Any]], *,
                   min_association: float = 0.2) -> dict[str, list[tuple[str, float]]]:
    """Per protected feature, the other features associated with it in ``rows``
    (Cramér's V at least ``min_association``; numbers binned by quintile), strongest
    first: what a model could use in its place."""
    if len(rows) < 50:
        raise InvalidInputError("rows", "needs at least 50 rows to measure association",
                                len(rows))
    codes = {f.name: _codes([r[f.name] for r in rows]) for f in schema.features}
    out: dict[str, list[tuple[str, float]]] = {}
    for p in (f.name for f in schema.features if f.protected):
        found = [(f.name, _cramers_v(codes[p], codes[f.name])) for f in schema.features
                 if not f.protected]
        out[p] = sorted([(n, v) for n, v in found if v >= min_association],
                        key=lambda nv: -nv[1])
    return out
