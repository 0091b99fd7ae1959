"""Fairness of a tabular model against its protected features.

- :func:`counterfactual_fairness`: change only the protected attribute of each applicant
  (every other category, or for a number every decile of the training data) and count how
  often the decision changes. A model that does not use the attribute flips nothing.
- :func:`protected_share`: the mean share of the attribution that falls on protected
  features and on their likely proxies, over many explanations.
- :func:`likely_proxies` and :func:`proxy_associations`: features associated with a
  protected one, by the bias-corrected Cramér's V (Bergsma 2013) with a permutation
  p-value; a likely proxy has both a large association and a small p-value.

Bergsma, W. (2013). A bias-correction for Cramér's V and Tschuprow's T. Journal of the
Korean Statistical Society 42(3), 323-328.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from xai_sandbox.errors import InvalidInputError, UnsupportedModelError, number_in
from xai_sandbox.explainers.explanation import Explanation
from xai_sandbox.models.registry import RegisteredModel

__all__ = ["PROXY_MEASURE", "ProxyFinding", "counterfactual_fairness", "cramers_v",
           "likely_proxies", "protected_share", "proxy_associations"]


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


PROXY_MEASURE = "cramers_v_bias_corrected"
"""Name of the association measure :func:`likely_proxies` reports (Bergsma 2013)."""


class ProxyFinding(tuple[str, float]):
    """One feature's association with one protected feature.

    It unpacks as the ``(feature, value)`` pair earlier versions returned, so existing
    callers keep working, and carries the test behind it: ``measure``, ``threshold``,
    ``p_value``, ``alpha``, ``n_permutations``, ``uncorrected`` (the plain Cramér's V) and
    ``levels`` (the categories or bins on each side).
    """

    measure: str
    threshold: float
    p_value: float
    alpha: float
    n_permutations: int
    uncorrected: float
    levels: tuple[int, int]

    def __new__(cls, feature: str, value: float, *, threshold: float, p_value: float,
                alpha: float, n_permutations: int, uncorrected: float,
                levels: tuple[int, int]) -> ProxyFinding:
        self = super().__new__(cls, (feature, value))
        self.measure = PROXY_MEASURE
        self.threshold = threshold
        self.p_value = p_value
        self.alpha = alpha
        self.n_permutations = n_permutations
        self.uncorrected = uncorrected
        self.levels = levels
        return self

    @property
    def feature(self) -> str:
        return self[0]

    @property
    def value(self) -> float:
        return self[1]

    @property
    def flagged(self) -> bool:
        """A likely proxy: the corrected measure at least ``threshold`` and ``p_value``
        below ``alpha``."""
        return self.value >= self.threshold and self.p_value < self.alpha

    def to_dict(self) -> dict[str, Any]:
        """The finding as JSON-safe fields."""
        return {"feature": self.feature, "measure": self.measure, "value": self.value,
                "threshold": self.threshold, "p_value": self.p_value, "alpha": self.alpha,
                "n_permutations": self.n_permutations, "uncorrected": self.uncorrected,
                "levels": list(self.levels), "flagged": self.flagged}


def _codes(values: Sequence[Any], numeric: bool, bins: int) -> np.ndarray:
    """Integer codes 0..m-1 of a column: categories as they are, numbers by quantile bin
    (``bins`` of them; fewer where values repeat); every code occurs."""
    if numeric:
        numbers = np.asarray(values, dtype=np.float64)
        edges = np.unique(np.quantile(numbers, np.arange(1, bins) / bins))
        raw = np.searchsorted(edges, numbers, side="right")
    else:
        raw = np.asarray([str(v) for v in values])
    _, inverse = np.unique(raw, return_inverse=True)
    return np.asarray(inverse, dtype=np.int64).reshape(-1)


def _is_numeric(spec: Any, values: Sequence[Any]) -> bool:
    kind = getattr(spec, "kind", None)
    if kind is not None:
        return bool(kind == "numeric")
    return all(isinstance(v, int | float | np.integer | np.floating)
               and not isinstance(v, bool | np.bool_) for v in values)


def _chi2(tables: np.ndarray, rows: np.ndarray, cols: np.ndarray, n: int) -> np.ndarray:
    """Pearson's chi-squared of each table of ``tables`` (..., r, k) with the given
    margins (all positive): ``n * (sum O^2 / (R C) - 1)``."""
    ratio = (tables.astype(np.float64) ** 2 / np.outer(rows, cols)).sum(axis=(-2, -1))
    out: np.ndarray = np.maximum(n * (ratio - 1.0), 0.0)
    return out


def cramers_v(chi2: np.ndarray | float, n: int, r: int, k: int, *,
              corrected: bool = True) -> np.ndarray:
    """Cramér's V of an ``r`` x ``k`` table of ``n`` observations from its chi-squared.

    With ``corrected`` (default), Bergsma's (2013) bias correction: phi^2 is reduced by
    its expectation under independence, ``(r - 1)(k - 1) / (n - 1)``, floored at 0, and
    the table's dimensions by ``(m - 1)^2 / (n - 1)``. Without it, the plain V, which
    grows with the number of categories even when the two are independent: a 50-value
    attribute against a 5-bin number has V about 0.2 on 1,000 unrelated rows.
    """
    chi = np.asarray(chi2, dtype=np.float64)
    if min(r, k) < 2 or n < 2:
        return np.zeros_like(chi)
    phi2 = chi / n
    if not corrected:
        return np.asarray(np.sqrt(np.minimum(phi2 / (min(r, k) - 1), 1.0)))
    phi2 = np.maximum(0.0, phi2 - (r - 1) * (k - 1) / (n - 1))
    r_c = r - (r - 1) ** 2 / (n - 1)
    k_c = k - (k - 1) ** 2 / (n - 1)
    denom = min(r_c, k_c) - 1.0
    if denom <= 0:
        return np.zeros_like(chi)
    return np.asarray(np.sqrt(np.minimum(phi2 / denom, 1.0)))


def _association(a: np.ndarray, permuted: Callable[[], np.ndarray], b: np.ndarray, *,
                 below: float | None = None) -> tuple[float, float, float, int, int]:
    """(corrected V, uncorrected V, permutation p-value, r, k) of codes ``a`` and ``b``.

    ``permuted()`` gives permutations of ``a`` (one per row). The margins stay fixed under
    permutation, so chi-squared orders the tables as the corrected V does, and one
    bincount builds every permuted table at once. With ``below``, a corrected V under it
    skips the permutations (p-value NaN): such a feature cannot be flagged anyway.
    """
    n, r, k = a.shape[0], int(a.max()) + 1, int(b.max()) + 1
    if r < 2 or k < 2:
        return 0.0, 0.0, 1.0, r, k
    rows, cols = np.bincount(a, minlength=r), np.bincount(b, minlength=k)
    observed = np.bincount(a * k + b, minlength=r * k).reshape(r, k)
    chi2 = float(_chi2(observed, rows, cols, n))
    v = float(cramers_v(chi2, n, r, k))
    plain = float(cramers_v(chi2, n, r, k, corrected=False))
    if below is not None and v < below:
        return v, plain, float("nan"), r, k
    shuffled = permuted()
    m = shuffled.shape[0]
    flat = ((np.arange(m)[:, None] * r + shuffled) * k + b[None, :]).ravel()
    tables = np.bincount(flat, minlength=m * r * k).reshape(m, r, k)
    null = _chi2(tables, rows, cols, n)
    # Ties count against the feature; a relative tolerance absorbs rounding.
    p_value = (1.0 + float((null >= chi2 * (1.0 - 1e-9)).sum())) / (m + 1.0)
    return v, plain, p_value, r, k


def proxy_associations(schema: Any, rows: Sequence[Mapping[str, Any]], *,
                       min_association: float = 0.2, alpha: float = 0.01,
                       n_permutations: int = 499, bins: int = 5,
                       random_state: int | np.random.Generator | None = 0
                       ) -> dict[str, list[ProxyFinding]]:
    """Per protected feature of ``schema``, every other feature's association with it in
    ``rows``, strongest first (flagged or not).

    The measure is the bias-corrected Cramér's V (Bergsma 2013; numbers in ``bins``
    quantile bins), so an attribute with many values is not associated with everything by
    chance. Each comes with a permutation p-value: the share of ``n_permutations``
    shuffles of the protected column (drawn from ``random_state``) whose association is
    at least the observed one. A feature is a likely proxy when the measure is at least
    ``min_association`` and the p-value is below ``alpha``.
    """
    return _findings(schema, rows, min_association=min_association, alpha=alpha,
                     n_permutations=n_permutations, bins=bins, random_state=random_state,
                     every=True)


def _findings(schema: Any, rows: Sequence[Mapping[str, Any]], *, min_association: float,
              alpha: float, n_permutations: int, bins: int,
              random_state: int | np.random.Generator | None, every: bool
              ) -> dict[str, list[ProxyFinding]]:
    """:func:`proxy_associations`; without ``every``, no permutations for features whose
    measure is under ``min_association`` (their p-value is NaN)."""
    if len(rows) < 50:
        raise InvalidInputError("rows", "needs at least 50 rows to measure association",
                                len(rows))
    number_in(min_association, 0.0, 1.0, "min_association")
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha <= 1:
        raise InvalidInputError("alpha", "must be a number in (0, 1]", alpha)
    number_in(n_permutations, 1, 100_000, "n_permutations", integer=True)
    number_in(bins, 2, 100, "bins", integer=True)
    if alpha < 1.0 / (n_permutations + 1):
        raise InvalidInputError("alpha", f"can never be reached with {n_permutations} "
                                "permutations (the smallest p-value is 1 / "
                                f"{n_permutations + 1}); raise n_permutations", alpha)
    rng = (random_state if isinstance(random_state, np.random.Generator)
           else np.random.default_rng(random_state))
    features = list(schema.features)
    missing = sorted({f.name for f in features if any(f.name not in r for r in rows)})
    if missing:
        raise InvalidInputError("rows", "must hold every feature of the schema", missing)
    codes = {}
    for f in features:
        values = [r[f.name] for r in rows]
        codes[f.name] = _codes(values, _is_numeric(f, values), int(bins))
    out: dict[str, list[ProxyFinding]] = {}
    for p in (f for f in features if f.protected):
        a = codes[p.name]
        # One generator per protected feature, its shuffles drawn when first needed: the
        # p-values do not depend on which features skipped the test.
        own = np.random.default_rng(int(rng.integers(2**63)))
        permuted = functools.cache(lambda a=a, own=own: own.permuted(
            np.tile(a, (int(n_permutations), 1)), axis=1))
        found = []
        for f in features:
            if f.protected:
                continue
            v, plain, p_value, r, k = _association(
                a, permuted, codes[f.name], below=None if every else float(min_association))
            found.append(ProxyFinding(f.name, v, threshold=float(min_association),
                                      p_value=p_value, alpha=float(alpha),
                                      n_permutations=int(n_permutations), uncorrected=plain,
                                      levels=(r, k)))
        out[p.name] = sorted(found, key=lambda x: (-x.value, x.p_value, x.feature))
    return out


def likely_proxies(schema: Any, rows: Sequence[Mapping[str, Any]], *,
                   min_association: float = 0.2, alpha: float = 0.01,
                   n_permutations: int = 499, bins: int = 5,
                   random_state: int | np.random.Generator | None = 0
                   ) -> dict[str, list[ProxyFinding]]:
    """Per protected feature, the other features that are likely proxies for it in
    ``rows``, strongest first: what a model could use in its place.

    A feature is one when its bias-corrected Cramér's V is at least ``min_association``
    and its permutation p-value is below ``alpha`` (see :func:`proxy_associations`). Each
    finding unpacks as ``(feature, value)`` and carries ``measure``, ``threshold`` and
    ``p_value``; ``finding.to_dict()`` gives them all.
    """
    found = _findings(schema, rows, min_association=min_association, alpha=alpha,
                      n_permutations=n_permutations, bins=bins, random_state=random_state,
                      every=False)
    return {p: [f for f in group if f.flagged] for p, group in found.items()}
