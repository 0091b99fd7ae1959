"""Counterfactual search for tabular models with a feature schema.

Only features the schema marks mutable (and never protected ones) may change; numeric
values stay within the schema's bounds; a feature with a monotone direction only moves the
way that lowers the risk it carries, so the search never suggests, say, borrowing more to
be approved. Numeric values keep the data's granularity (whole numbers stay whole).

With training data (``data``, or :class:`ActionConstraints` built from it) every option is
one a person could act on: each changed number stays within the training data's 1st-99th
percentile and within a relative cap of its current value (50% by default, per feature),
a categorical feature only moves to a code training rows have and, where it has an order,
to a better one, and every option carries
its out-of-distribution score and is dropped when it is implausible (above the profile's
limit and above the applicant's own score). Options are minimal: a change that can be
undone without losing the outcome is undone, and an option whose changed features include
all of another option's is dropped. Each option also carries its neighbour distance: the
mean standardised distance to the 5 nearest real training applicants with the desired
outcome.

The search is a beam search over single-feature moves, scored in batches by the model
itself: each round tries every move from every kept state, keeps the plausible states
that reach the desired class as options, and carries the closest of the rest forward.
Options are ranked by cost (a normalised distance: a numeric change counts its size over
the feature's spread, a category switch counts 1, every changed feature adds 0.5) plus,
with training data, their neighbour distance, then a diverse set of k is chosen,
preferring options that change different features. Every
option returned was re-scored by the model and reaches the desired class. The options
are guidance, not a promise: a new application is decided on its own facts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xai_sandbox.counterfactuals.constraints import DEFAULT_MAX_OOD_SCORE, ActionConstraints
from xai_sandbox.counterfactuals.plausibility import (
    column_weights,
    neighbour_distance,
    ood_scores,
)
from xai_sandbox.errors import (
    InvalidInputError,
    InvalidTargetError,
    UnsupportedModelError,
    number_in,
)
from xai_sandbox.models.profile import TrainingProfile
from xai_sandbox.models.registry import RegisteredModel
from xai_sandbox.models.schema import FeatureSchema, FeatureSpec

__all__ = ["NO_FEASIBLE_CHANGE", "Change", "Counterfactual", "CounterfactualSet",
           "find_counterfactuals"]

NO_FEASIBLE_CHANGE = "no feasible change found"
_SPARSITY_COST = 0.5
_OOD_PENALTY = 1.0   # beam score lost per unit of OOD score above the limit


@dataclass(frozen=True)
class Change:
    feature: str
    before: Any
    after: Any


@dataclass(frozen=True)
class Counterfactual:
    """One way to reach the desired outcome, re-scored by the model.

    ``ood_score`` is the training profile's out-of-distribution score of the changed row
    (1.0 = the training rows' own 99th percentile; ``None`` without a profile);
    ``neighbour_distance`` the mean standardised distance to the nearest real training
    applicants with the desired outcome (``None`` without training data); lower is more
    plausible for both.
    """

    changes: tuple[Change, ...]
    probability: float          # of the desired class after the changes
    cost: float
    row: Mapping[str, Any]
    ood_score: float | None = None
    neighbour_distance: float | None = None

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
    original_ood_score: float | None = None
    dropped: Mapping[str, int] = field(default_factory=dict)   # reason -> options dropped

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
    """Without constraints: candidate values on the allowed side(s) of ``value``, within
    the bounds and the data's range."""
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


def _constrained_moves(spec: FeatureSpec, value: float, constraints: ActionConstraints,
                       steps: int) -> list[float]:
    """Candidate values inside :meth:`ActionConstraints.numeric_range`, nearest first; the
    range may lie wholly on one side of ``value`` (a value above the 99th percentile)."""
    low, high = constraints.numeric_range(spec, value)
    if low > high:
        return []
    candidates: set[float] = set()
    for start, end in ((min(high, value), low), (max(low, value), high)):
        if start == end == value:
            continue
        for v in np.linspace(start, end, steps + 1):
            v = float(np.round(v)) if constraints.integral[spec.name] else float(v)
            if low <= v <= high and v != value:
                candidates.add(v)
    return sorted(candidates, key=lambda v: abs(v - value))


def find_counterfactuals(model: RegisteredModel, row: Mapping[str, Any] | np.ndarray, *,
                         desired_class: str | int | None = None, k: int = 3,
                         data: np.ndarray | None = None, max_changes: int = 3,
                         beam_width: int = 24, steps: int = 8,
                         constraints: ActionConstraints | None = None,
                         plausibility_weight: float = 1.0,
                         reaches: Callable[[np.ndarray], np.ndarray] | None = None
                         ) -> CounterfactualSet:
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
        Encoded training rows (at least 10). Without ``constraints``, the default
        :class:`ActionConstraints` are built from them (1st-99th percentile, 50% relative
        cap, the model's training profile, neighbour distance to the rows the model puts
        in the desired class).
    max_changes, beam_width, steps:
        At most this many features changed, states kept per round, values tried per side.
    constraints:
        Limits built once with :meth:`ActionConstraints.from_training`; they take the
        place of ``data``. With neither, numeric values only stay within the schema's
        bounds and no neighbour distance is given.
    plausibility_weight:
        With training data, options are chosen by cost plus this times their neighbour
        distance (both are distances in the same standardised space: from the applicant,
        and to real applicants with the desired outcome), so that of two similar changes
        the one that ends among real approved applicants is offered; 0 chooses by cost
        alone. The options returned are ordered by cost either way.
    reaches:
        The decision rule: given class probabilities ``(n, classes)``, whether each row is
        decided as ``desired_class`` (for a policy with a threshold on the adverse class,
        ``lambda p: p[:, adverse] < threshold``). Default: the most probable class is
        ``desired_class``. A change counts only when the rule that decides says so.
    """
    schema = model.schema
    if schema is None or model.adapter.input_kind != "tabular":
        raise UnsupportedModelError("model", "counterfactuals need a tabular model with a "
                                    "feature schema", model.model_id)
    for name, value, low in (("k", k, 1), ("max_changes", max_changes, 1),
                             ("beam_width", beam_width, 1), ("steps", steps, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise InvalidInputError(name, f"must be an integer >= {low}", value)
    number_in(plausibility_weight, 0.0, math.inf, "plausibility_weight")
    if constraints is not None and not isinstance(constraints, ActionConstraints):
        raise InvalidInputError("constraints", "must be ActionConstraints (see "
                                "ActionConstraints.from_training) or None", constraints)
    if constraints is None and data is not None:
        data = np.asarray(data, dtype=np.float64)
        if data.ndim != 2 or data.shape[0] < 10 or data.shape[1] != len(schema.columns):
            raise InvalidInputError("data", f"must be encoded training rows of shape "
                                    f"(rows >= 10, {len(schema.columns)})", data.shape)
        profile = model.profile if model.profile is not None and \
            model.profile.mean.shape == (data.shape[1],) else None
        constraints = ActionConstraints.from_training(data, schema, profile=profile)
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
    profile = constraints.profile if constraints is not None else model.profile
    max_ood = constraints.max_ood_score if constraints is not None else DEFAULT_MAX_OOD_SCORE
    s0 = float(ood_scores(profile, x)[0]) if profile is not None else None
    limit = max(max_ood, s0) if s0 is not None else None
    described: dict[str, Any] = {
        "mutable_features": [f.name for f in schema.features if _allowed(f)],
        "max_changes": max_changes, "monotone_rules": True, "bounds": True,
        "minimal": True, "ood_limit": limit}
    if constraints is not None:
        described["actionable"] = constraints.to_dict()
    if current == target:
        return CounterfactualSet(original, float(p0[target]), names[target], (), described,
                                 s0)

    scale = _scales(schema, data, constraints)
    moves = _moves(schema, x, data, steps, constraints, scale)
    if reaches is not None and not callable(reaches):
        raise InvalidInputError("reaches", "must be a function of class probabilities",
                                reaches)
    search = _Search(model, schema, x, target, profile, limit, scale, reaches)
    options = search.beam(moves, max_changes, beam_width)
    options = search.minimal(options)
    kept = _undominated(options)
    dropped = {"implausible": search.implausible, "dominated": len(options) - len(kept)}
    near: dict[bytes, float] = {}
    if constraints is not None and kept:
        reference = _desired_rows(model, constraints, target)
        if reference.shape[0]:
            weights = column_weights(schema, constraints.scale)
            found = neighbour_distance(np.stack([o[3] for o in kept]), reference, weights,
                                       constraints.neighbours)
            near = {o[3].tobytes(): float(d) for o, d in zip(kept, found, strict=True)}
    if near and plausibility_weight > 0:   # prefer options nearer real approved applicants
        kept = sorted(kept, key=lambda o: o[2] + plausibility_weight * near[o[3].tobytes()])
    chosen = _diverse(kept, k)
    distances = [near.get(o[3].tobytes()) for o in chosen]
    result = []
    for (changed, prob, cost, vec), distance in zip(chosen, distances, strict=True):
        new_row = schema.decode(vec[None])[0]
        changes = tuple(Change(f, original[f], new_row[f])
                        for f in sorted(changed, key=schema.names.index))
        score = float(profile.assess(vec)[0].score) if profile is not None else None
        result.append(Counterfactual(changes, prob, cost, new_row, score, distance))
    return CounterfactualSet(original, float(p0[target]), names[target], tuple(result),
                             described, s0, dropped)


Move = tuple[str, np.ndarray, float]  # feature, column values to set, cost
Option = tuple[frozenset[str], float, float, np.ndarray]  # features, P(target), cost, row


def _scales(schema: FeatureSchema, data: np.ndarray | None,
            constraints: ActionConstraints | None) -> dict[str, float]:
    """Each numeric feature's spread, the unit of its cost (0 where unknown)."""
    if constraints is not None:
        return dict(constraints.scale)
    out = {}
    for spec, cols in zip(schema.features, schema.groups, strict=True):
        if spec.kind == "numeric":
            column = data[:, cols[0]] if data is not None and data.size else None
            out[spec.name] = float(np.std(column)) if column is not None else 0.0
    return out


def _moves(schema: FeatureSchema, x: np.ndarray, data: np.ndarray | None, steps: int,
           constraints: ActionConstraints | None, scale: Mapping[str, float]
           ) -> dict[str, list[Move]]:
    """Every single-feature change allowed by the schema and the constraints, with its
    cost."""
    out: dict[str, list[Move]] = {}
    for spec, cols in zip(schema.features, schema.groups, strict=True):
        if not _allowed(spec):
            continue
        idx = list(cols)
        if spec.kind == "numeric":
            value = float(x[idx[0]])
            spread = scale.get(spec.name, 0.0)
            if spread <= 0:
                spread = max(abs(value), 1.0)
            if constraints is not None:
                values = _constrained_moves(spec, value, constraints, steps)
            else:
                column = data[:, idx[0]] if data is not None else None
                values = _numeric_moves(spec, value, column, steps)
            out[spec.name] = [(spec.name, np.array([v]), abs(v - value) / spread)
                              for v in values]
        else:
            codes = spec.category_codes()
            now = int(np.argmax(x[idx]))
            options = []
            for j in range(len(idx)):
                if j == now or (constraints is not None and not
                                constraints.category_allowed(spec.name, codes[now], codes[j])):
                    continue
                onehot = np.zeros(len(idx))
                onehot[j] = 1.0
                options.append((spec.name, onehot, 1.0))
            out[spec.name] = options
    return out


class _Search:
    """The model, the applicant and the plausibility limit shared by the search steps."""

    def __init__(self, model: RegisteredModel, schema: FeatureSchema, x: np.ndarray,
                 target: int, profile: TrainingProfile | None, limit: float | None,
                 scale: Mapping[str, float],
                 reaches: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        self.model, self.schema, self.x, self.target = model, schema, x, target
        self.reaches = reaches
        self.profile, self.limit, self.scale = profile, limit, scale
        self.cols = dict(zip(schema.names, schema.groups, strict=True))
        self.implausible = 0

    def score(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """P(target), whether each row reaches the target, and its OOD excess (> 0:
        implausible)."""
        probs = self.model.probabilities(X)
        flipped = (np.asarray(self.reaches(probs), dtype=bool) if self.reaches is not None
                   else np.argmax(probs, axis=1) == self.target)
        excess = (ood_scores(self.profile, X) - self.limit
                  if self.profile is not None and self.limit is not None
                  else np.zeros(X.shape[0]))
        return probs[:, self.target], flipped, excess

    def cost(self, changed: frozenset[str], vec: np.ndarray) -> float:
        total = 0.0
        for feature in changed:
            spec = self.schema.feature(feature)
            idx = list(self.cols[feature])
            if spec.kind == "numeric":
                before, after = float(self.x[idx[0]]), float(vec[idx[0]])
                spread = self.scale.get(feature, 0.0)
                total += abs(after - before) / (spread if spread > 0 else
                                                max(abs(before), 1.0))
            else:
                total += 1.0
        return total + _SPARSITY_COST * len(changed)

    def beam(self, moves: Mapping[str, Sequence[Move]], max_changes: int, beam_width: int
             ) -> list[Option]:
        beam: list[tuple[frozenset[str], float, np.ndarray]] = [(frozenset(), 0.0, self.x)]
        found: dict[bytes, Option] = {}
        rejected: set[bytes] = set()
        for _ in range(max_changes):
            states, costs, vectors = [], [], []
            for changed, cost, vec in beam:
                for feature, feature_moves in moves.items():
                    if feature in changed:
                        continue
                    for _, values, move_cost in feature_moves:
                        new = vec.copy()
                        new[list(self.cols[feature])] = values
                        states.append(changed | {feature})
                        costs.append(cost + move_cost + _SPARSITY_COST)
                        vectors.append(new)
            if not vectors:
                break
            X = np.stack(vectors)
            prob, flipped, excess = self.score(X)
            good = flipped & (excess <= 0)
            for i in np.flatnonzero(good):
                key = X[i].tobytes()
                if key not in found or found[key][2] > costs[i]:
                    found[key] = (states[i], float(prob[i]), costs[i], X[i])
            rejected.update(X[i].tobytes() for i in np.flatnonzero(flipped & ~good))
            # Carry forward the states closest to the target class, cheapest first on ties;
            # an implausible state may still become plausible with one more change.
            rest = np.flatnonzero(~good)
            if rest.size == 0:
                break
            score = (prob[rest] - 0.05 * np.array(costs)[rest]
                     - _OOD_PENALTY * np.clip(excess[rest], 0, None))
            keep = rest[np.argsort(-score, kind="stable")[:beam_width]]
            beam = [(states[i], costs[i], X[i]) for i in keep]
        self.implausible = len(rejected)
        return sorted(found.values(), key=lambda o: (o[2], -o[1]))

    def minimal(self, options: list[Option]) -> list[Option]:
        """Undo every change an option does not need: while reverting one feature keeps
        the outcome (and plausibility), revert the one that saves the most cost."""
        out: dict[bytes, Option] = {}
        pending = list(options)
        while pending:
            trials: list[tuple[int, frozenset[str], np.ndarray]] = []
            for n, (changed, _, _, vec) in enumerate(pending):
                if len(changed) < 2:
                    continue
                for feature in changed:
                    undone = vec.copy()
                    undone[list(self.cols[feature])] = self.x[list(self.cols[feature])]
                    trials.append((n, changed - {feature}, undone))
            best: dict[int, Option] = {}
            if trials:
                prob, flipped, excess = self.score(np.stack([t[2] for t in trials]))
                for (n, changed, vec), p, ok in zip(trials, prob, flipped & (excess <= 0),
                                                    strict=True):
                    if ok:
                        option = (changed, float(p), self.cost(changed, vec), vec)
                        if n not in best or option[2] < best[n][2]:
                            best[n] = option
            still = []
            for n, option in enumerate(pending):
                if n in best:
                    still.append(best[n])
                    continue
                key = option[3].tobytes()
                if key not in out or out[key][2] > option[2]:
                    out[key] = option
            pending = still
        return sorted(out.values(), key=lambda o: (o[2], -o[1]))


def _undominated(options: list[Option]) -> list[Option]:
    """Drop every option whose changed features strictly include another option's: it is
    that option plus more changes for the same outcome."""
    sets = {o[0] for o in options}
    return [o for o in options if not any(s < o[0] for s in sets)]


def _desired_rows(model: RegisteredModel, constraints: ActionConstraints, target: int
                  ) -> np.ndarray:
    """Training rows with the desired outcome: their real one where known, else the
    model's decision."""
    reference = constraints.reference
    decided = (constraints.outcomes if constraints.outcomes is not None
               else np.argmax(model.probabilities(reference), axis=1))
    rows: np.ndarray = reference[decided == target]
    return rows


def _diverse(options: list[Option], k: int) -> list[Option]:
    """In the order given (cheapest first), preferring options that share no changed
    feature with those kept; the chosen ones ordered by cost."""
    chosen: list[Option] = []
    used: set[frozenset[str]] = set()
    for option in options:  # first pass: distinct feature sets with no overlap
        if len(chosen) == k:
            break
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
