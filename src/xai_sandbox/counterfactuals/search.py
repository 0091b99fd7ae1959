"""Counterfactual search for tabular models with a feature schema.

Only features the schema marks mutable (and never protected ones) may change; numeric
values stay within the schema's bounds (and within the range seen in the data, when data
is given); a feature with a monotone direction only moves the way that lowers the risk it
carries, so the search never suggests, say, borrowing more to be approved. Numeric values
keep the data's granularity (whole numbers stay whole).

The search is a beam search over single-feature moves, scored in batches by the model
itself: each round tries every move from every kept state, keeps the states that reach
the desired class as options, and carries the closest of the rest forward. Options are
ranked by cost (a normalised distance: a numeric change counts its size over the
feature's spread, a category switch counts 1, every changed feature adds 0.5), then a
diverse set of k is chosen, preferring options that change different features. Every
option returned was re-scored by the model and reaches the desired class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xai_sandbox.errors import InvalidInputError, InvalidTargetError, UnsupportedModelError
from xai_sandbox.models.registry import RegisteredModel
from xai_sandbox.models.schema import FeatureSchema, FeatureSpec

__all__ = ["NO_FEASIBLE_CHANGE", "Change", "Counterfactual", "CounterfactualSet",
           "find_counterfactuals"]

NO_FEASIBLE_CHANGE = "no feasible change found"
_SPARSITY_COST = 0.5


@dataclass(frozen=True)
class Change:
    feature: str
    before: Any
    after: Any


@dataclass(frozen=True)
class Counterfactual:
    """One way to reach the desired outcome, re-scored by the model."""

    changes: tuple[Change, ...]
    probability: float          # of the desired class after the changes
    cost: float
    row: Mapping[str, Any]

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(c.feature for c in self.changes)


@dataclass(frozen=True)
class CounterfactualSet:
    original: Mapping[str, Any]
    original_probability: float
    desired_class: str
    options: tuple[Counterfactual, ...]
    constraints: Mapping[str, Any] = field(default_factory=dict)

    @property
    def found(self) -> bool:
        return bool(self.options)

    @property
    def message(self) -> str:
        return f"{len(self.options)} option(s) found" if self.options else NO_FEASIBLE_CHANGE



def _allowed(spec: FeatureSpec) -> bool:
    return spec.mutable and not spec.protected


def _numeric_moves(spec: FeatureSpec, value: float, column: np.ndarray | None,
                   steps: int) -> list[float]:
    """Candidate values on the allowed side(s) of ``value``, within bounds and data range."""
    low, high = spec.bounds if spec.bounds is not None else (-np.inf, np.inf)
    integral = True
    if column is not None and column.size:
        low, high = max(low, float(column.min())), min(high, float(column.max()))
        integral = bool(np.all(np.mod(column, 1) == 0))
    if not np.isfinite(low) or not np.isfinite(high):
        span = max(abs(value), 1.0)
        low, high = (max(low, value - span), min(high, value + span))
    lower_allowed = spec.monotone != "decreasing"   # more of it lowers risk: never lower it
    higher_allowed = spec.monotone != "increasing"  # more of it raises risk: never raise it
    candidates: set[float] = set()
    for side_allowed, end in ((lower_allowed, low), (higher_allowed, high)):
        if not side_allowed or end == value:
            continue
        for v in np.linspace(value, end, steps + 1)[1:]:
            candidates.add(float(np.round(v)) if integral else float(v))
    candidates.discard(value)
    return sorted(candidates, key=lambda v: abs(v - value))


def find_counterfactuals(model: RegisteredModel, row: Mapping[str, Any] | np.ndarray, *,
                         desired_class: str | int | None = None, k: int = 3,
                         data: np.ndarray | None = None, max_changes: int = 3,
                         beam_width: int = 24, steps: int = 8) -> CounterfactualSet:
    """The ``k`` cheapest diverse feasible changes that bring ``row`` to ``desired_class``.

    Parameters
    ----------
    model:
        A registered tabular classifier with a feature schema.
    row:
        The person's features (name -> value) or one encoded row.
    desired_class:
        Class name or index to reach; default: the most probable class other than the
        current prediction.
    data:
        Encoded training rows: numeric changes stay within their range, and distances are
        scaled by each feature's spread in them.
    max_changes, beam_width, steps:
        At most this many features changed, states kept per round, values tried per side.
    """
    schema = model.schema
    if schema is None or model.adapter.input_kind != "tabular":
        raise UnsupportedModelError("model", "counterfactuals need a tabular model with a "
                                    "feature schema", model.model_id)
    for name, value, low in (("k", k, 1), ("max_changes", max_changes, 1),
                             ("beam_width", beam_width, 1), ("steps", steps, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise InvalidInputError(name, f"must be an integer >= {low}", value)
    if isinstance(row, Mapping):
        x = schema.encode(row)[0]
    else:
        x = model.adapter.validate_inputs(row, "row")[0].astype(np.float64)
    original = schema.decode(x[None])[0]
    p0 = model.probabilities(x[None])[0]
    current = int(np.argmax(p0))
    if desired_class is None:
        order = np.argsort(-p0)
        target = int(order[1] if order[0] == current else order[0])
    else:
        if isinstance(desired_class, str) and desired_class not in model.class_names:
            raise InvalidTargetError("desired_class", f"must be one of "
                                     f"{list(model.class_names)}", desired_class)
        target = model.class_index(desired_class)
        if not 0 <= target < len(p0):
            raise InvalidTargetError("desired_class", f"must be a class in [0, {len(p0)})",
                                     desired_class)
    names = model.class_names or tuple(str(i) for i in range(len(p0)))
    constraints = {"mutable_features": [f.name for f in schema.features if _allowed(f)],
                   "max_changes": max_changes, "monotone_rules": True, "bounds": True}
    if current == target:
        return CounterfactualSet(original, float(p0[target]), names[target], (), constraints)

    moves = _moves(schema, x, data, steps)
    options = _beam(model, x, moves, target, max_changes, beam_width)
    chosen = _diverse(options, k)
    result = []
    for changed, prob, cost, vec in chosen:
        new_row = schema.decode(vec[None])[0]
        changes = tuple(Change(f, original[f], new_row[f]) for f in sorted(changed,
                                                                             key=schema.names.index))
        result.append(Counterfactual(changes, prob, cost, new_row))
    return CounterfactualSet(original, float(p0[target]), names[target], tuple(result),
                             constraints)


Move = tuple[str, np.ndarray, float]  # feature, column values to set, cost


def _moves(schema: FeatureSchema, x: np.ndarray, data: np.ndarray | None,
           steps: int) -> dict[str, list[Move]]:
    """Every single-feature change allowed by the schema, with its cost."""
    out: dict[str, list[Move]] = {}
    for spec, cols in zip(schema.features, schema.groups, strict=True):
        if not _allowed(spec):
            continue
        idx = list(cols)
        if spec.kind == "numeric":
            column = data[:, idx[0]] if data is not None else None
            spread = float(np.std(column)) if column is not None and column.size else 0.0
            value = float(x[idx[0]])
            if spread <= 0:
                spread = max(abs(value), 1.0)
            out[spec.name] = [(spec.name, np.array([v]), abs(v - value) / spread)
                              for v in _numeric_moves(spec, value, column, steps)]
        else:
            now = int(np.argmax(x[idx]))
            options = []
            for j in range(len(idx)):
                if j != now:
                    onehot = np.zeros(len(idx))
                    onehot[j] = 1.0
                    options.append((spec.name, onehot, 1.0))
            out[spec.name] = options
    return out


def _beam(model: RegisteredModel, x: np.ndarray, moves: Mapping[str, Sequence[Move]],
          target: int, max_changes: int, beam_width: int
          ) -> list[tuple[frozenset[str], float, float, np.ndarray]]:
    schema = model.schema
    if schema is None:  # pragma: no cover - checked by the caller
        raise UnsupportedModelError("model", "needs a schema", None)
    cols = dict(zip(schema.names, schema.groups, strict=True))
    beam: list[tuple[frozenset[str], float, np.ndarray]] = [(frozenset(), 0.0, x)]
    found: dict[bytes, tuple[frozenset[str], float, float, np.ndarray]] = {}
    for _ in range(max_changes):
        states, costs, vectors = [], [], []
        for changed, cost, vec in beam:
            for feature, feature_moves in moves.items():
                if feature in changed:
                    continue
                for _, values, move_cost in feature_moves:
                    new = vec.copy()
                    new[list(cols[feature])] = values
                    states.append(changed | {feature})
                    costs.append(cost + move_cost + _SPARSITY_COST)
                    vectors.append(new)
        if not vectors:
            break
        X = np.stack(vectors)
        probs = model.probabilities(X)
        flipped = np.argmax(probs, axis=1) == target
        for i in np.flatnonzero(flipped):
            key = X[i].tobytes()
            if key not in found or found[key][2] > costs[i]:
                found[key] = (states[i], float(probs[i, target]), costs[i], X[i])
        # Carry forward the states closest to the target class, cheapest first on ties.
        rest = np.flatnonzero(~flipped)
        if rest.size == 0:
            break
        score = probs[rest, target] - 0.05 * np.array(costs)[rest]
        keep = rest[np.argsort(-score, kind="stable")[:beam_width]]
        beam = [(states[i], costs[i], X[i]) for i in keep]
    return sorted(found.values(), key=lambda o: (o[2], -o[1]))


def _diverse(options: list[tuple[frozenset[str], float, float, np.ndarray]], k: int
             ) -> list[tuple[frozenset[str], float, float, np.ndarray]]:
    """Cheapest first; then prefer options that share no changed feature with those kept."""
    chosen: list[tuple[frozenset[str], float, float, np.ndarray]] = []
    used: set[frozenset[str]] = set()
    for option in options:  # first pass: distinct feature sets with no overlap
        if len(chosen) == k:
            return chosen
        if option[0] not in used and all(not (option[0] & c[0]) for c in chosen):
            chosen.append(option)
            used.add(option[0])
    for option in options:  # then: any other feature set
        if len(chosen) == k:
            break
        if option[0] not in used:
            chosen.append(option)
            used.add(option[0])
    return sorted(chosen, key=lambda o: o[2])
