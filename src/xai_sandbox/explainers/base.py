"""The explainer registry and the one verb, :func:`explain`.

Every method is a class registered under a name. Its constructor only stores parameters;
the work happens in :meth:`Explainer.run`, which receives a validated :class:`Problem` and
returns a :class:`Result`. :func:`explain` validates everything at the boundary, runs the
method, times it and wraps the result in an :class:`Explanation` with full provenance.
"""

from __future__ import annotations

import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from xai_sandbox.errors import (
    InvalidInputError,
    InvalidTargetError,
    NotDifferentiableError,
    UnknownMethodError,
    UnsupportedModelError,
)
from xai_sandbox.explainers.explanation import Explanation, library_versions
from xai_sandbox.models.adapters import InputKind, ModelAdapter, wrap
from xai_sandbox.models.registry import RegisteredModel
from xai_sandbox.models.schema import FeatureSchema

__all__ = ["EXPLAINERS", "Explainer", "Problem", "Result", "available_methods", "explain",
           "get_explainer", "register_explainer", "seeded"]

Requirement = Literal["gradients", "trees", "any"]


@dataclass(frozen=True)
class Problem:
    """A validated explanation request, as every explainer receives it."""

    adapter: ModelAdapter
    inputs: np.ndarray
    target: np.ndarray
    prediction: np.ndarray
    baselines: np.ndarray
    background: np.ndarray | None
    column_names: tuple[str, ...] | None
    groups: tuple[tuple[int, ...], ...] | None
    group_names: tuple[str, ...] | None
    random_state: int | None

    @property
    def n(self) -> int:
        return int(self.inputs.shape[0])

    def tensor(self, array: np.ndarray) -> torch.Tensor:
        """The array as a tensor of the model's dtype and device."""
        to_tensor = getattr(self.adapter, "to_tensor", None)
        if to_tensor is not None:
            result: torch.Tensor = to_tensor(array)
            return result
        return torch.as_tensor(array, dtype=torch.float64)

    def grad_tensor(self, array: np.ndarray) -> torch.Tensor:
        """The array as a fresh leaf tensor that requires grad (what Captum expects)."""
        return self.tensor(array).clone().requires_grad_(True)

    def baseline_rows(self) -> np.ndarray:
        """Baselines broadcast to one per input row."""
        return np.broadcast_to(self.baselines, self.inputs.shape).copy()

    def players(self) -> tuple[tuple[tuple[int, ...], ...], tuple[str, ...] | None]:
        """The 'players' of a feature-level method: feature groups, else single columns."""
        if self.groups is not None:
            return self.groups, self.group_names
        n_cols = int(np.prod(self.inputs.shape[1:]))
        return tuple((i,) for i in range(n_cols)), self.column_names


@dataclass(frozen=True)
class Result:
    """What an explainer computes; :func:`explain` adds the provenance."""

    values: np.ndarray
    expected_value: np.ndarray | None = None
    delta: np.ndarray | None = None
    baseline: np.ndarray | None = None
    feature_names: tuple[str, ...] | None = None
    output_space: str | None = None
    prediction: np.ndarray | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


class Explainer(ABC):
    """Base class of every explanation method.

    Subclasses set ``name``, ``summary``, ``requires`` and ``input_kinds``, store their
    parameters in ``__init__`` and implement :meth:`run`.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    requires: ClassVar[Requirement] = "any"
    input_kinds: ClassVar[tuple[InputKind, ...]] = ("tabular", "image", "tokens")

    def params(self) -> dict[str, Any]:
        """The constructor's parameters, JSON-safe, for provenance."""
        return {k: _json_safe(v) for k, v in vars(self).items() if not k.startswith("_")}

    def check(self, adapter: ModelAdapter) -> None:
        """Raise a typed error if this method cannot run on ``adapter``."""
        if self.requires == "gradients" and not adapter.differentiable:
            raise NotDifferentiableError(
                "method", f"{self.name} needs gradients: use a torch model, or a perturbation "
                "method (occlusion, lime, kernel_shap, exact_shapley)", type(adapter).__name__)
        if self.requires == "trees" and not getattr(adapter, "is_tree_ensemble", False):
            raise UnsupportedModelError(
                "method", f"{self.name} needs a tree ensemble (LightGBM, XGBoost, scikit-learn "
                "forests and boosting)", type(getattr(adapter, "estimator", adapter)).__name__)
        if adapter.input_kind not in self.input_kinds:
            raise UnsupportedModelError(
                "method", f"{self.name} supports {list(self.input_kinds)} inputs",
                adapter.input_kind)

    @abstractmethod
    def run(self, problem: Problem) -> Result:
        """Compute the attributions."""


def _json_safe(value: Any) -> Any:
    if isinstance(value, bool | int | float | str | type(None)):
        return value
    if isinstance(value, np.integer | np.floating):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, Sequence):
        return [_json_safe(v) for v in value]
    if isinstance(value, Explainer):
        return {"method": value.name, **value.params()}
    return repr(value)


EXPLAINERS: dict[str, type[Explainer]] = {}


def register_explainer(cls: type[Explainer]) -> type[Explainer]:
    """Class decorator: add an explainer to the registry under ``cls.name``."""
    if cls.name in EXPLAINERS and EXPLAINERS[cls.name] is not cls:
        raise InvalidInputError("name", "is already registered", cls.name)
    EXPLAINERS[cls.name] = cls
    return cls


def get_explainer(method: str, **params: Any) -> Explainer:
    """Instantiate a registered explainer; unknown names list the valid ones."""
    cls = EXPLAINERS.get(method) if isinstance(method, str) else None
    if cls is None:
        raise UnknownMethodError("method", f"must be one of {sorted(EXPLAINERS)}", method)
    try:
        return cls(**params)
    except TypeError as exc:
        raise InvalidInputError("params", f"{method} does not take these ({exc})",
                                sorted(params)) from exc


def available_methods() -> list[tuple[str, str, str]]:
    """(name, what it needs, one-line summary) of every registered explainer."""
    return [(name, cls.requires, cls.summary) for name, cls in sorted(EXPLAINERS.items())]


@contextlib.contextmanager
def seeded(random_state: int | None) -> Iterator[None]:
    """Seed torch's and numpy's global generators inside the block only.

    Captum and shap draw from the global generators; this keeps a ``random_state`` run
    deterministic without leaking a seed into the caller's process.
    """
    if random_state is None:
        yield
        return
    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(random_state)
        np.random.seed(random_state % 2**32)
        try:
            yield
        finally:
            np.random.set_state(np_state)


def _resolve_target(target: Any, prediction: np.ndarray, model: RegisteredModel | None,
                    parameter: str = "target") -> np.ndarray:
    n, k = prediction.shape
    if target is None:
        return (np.argmax(prediction, axis=1) if k > 1 else np.zeros(n)).astype(np.int64)
    if isinstance(target, str):
        if model is None:
            raise InvalidTargetError(parameter, "a class name needs a registered model", target)
        target = model.class_index(target)
    arr = np.asarray(target)
    if arr.dtype.kind not in "iu" or arr.ndim > 1 or (arr.ndim == 1 and arr.shape[0] != n):
        raise InvalidTargetError(parameter, f"must be an integer class index in [0, {k}) or one "
                                 f"per row ({n})", target)
    if ((arr < 0) | (arr >= k)).any():
        raise InvalidTargetError(parameter, f"must be in [0, {k}) for a model with {k} outputs",
                                 target)
    return np.broadcast_to(arr, (n,)).astype(np.int64)


def _resolve_baselines(adapter: ModelAdapter, inputs: np.ndarray, baselines: Any,
                       model: RegisteredModel | None) -> np.ndarray:
    if baselines is None and model is not None and model.reference is not None:
        baselines = model.reference
    if baselines is None:
        return np.zeros((1, *inputs.shape[1:]), dtype=inputs.dtype)
    if isinstance(baselines, int | float) and not isinstance(baselines, bool):
        return np.full((1, *inputs.shape[1:]), baselines, dtype=inputs.dtype)
    base = adapter.validate_inputs(baselines, "baselines")
    if base.shape[0] not in (1, inputs.shape[0]):
        raise InvalidInputError("baselines", f"must have 1 or {inputs.shape[0]} rows",
                                f"{base.shape[0]} rows")
    return base


def explain(model: Any, inputs: Any, *, method: str, target: Any = None,
            baselines: Any = None, background: Any = None, random_state: int | None = None,
            feature_names: Sequence[str] | None = None, group_features: bool | None = None,
            groups: Mapping[str, Sequence[str]] | None = None, **params: Any) -> Explanation:
    """Explain ``model``'s outputs on ``inputs`` with a registered method.

    Parameters
    ----------
    model:
        A :class:`RegisteredModel`, a :class:`ModelAdapter`, a ``torch.nn.Module`` (taken
        as an image model for 4-D inputs, tabular otherwise) or a fitted
        scikit-learn-API estimator.
    inputs:
        A batch (or one sample) in the model's input space.
    method:
        A name from :func:`available_methods`.
    target:
        Output to explain: ``None`` (the predicted class), an index, a class name (for a
        registered model) or one index per row.
    baselines:
        Reference input(s): one row or one per input; defaults to the registered model's
        reference row, else zeros.
    background:
        Rows that Shapley methods average over; defaults to the registered model's.
    random_state:
        Seed for methods that sample; the same seed gives the same result.
    feature_names:
        Column names (taken from the schema of a registered model).
    group_features:
        Explain one-hot columns of one feature as one feature (default: yes when the
        registered model has a schema).
    groups:
        Coarser groups to explain instead, ``{"liquidity": ["checking_status", "savings"],
        ...}``: each name maps to features of the schema (or to column names without a
        schema); together they must cover every feature once.
    **params:
        Parameters of the method (``n_steps``, ``layer``, ``n_samples``, ...).
    """
    registered = model if isinstance(model, RegisteredModel) else None
    if registered is not None:
        adapter = registered.adapter
    elif isinstance(model, torch.nn.Module):
        # A bare module: a batch of (n, C, H, W) is taken for images.
        adapter = wrap(model, input_kind="image" if np.ndim(inputs) == 4 else "tabular")
    else:
        adapter = wrap(model)
    explainer = get_explainer(method, **params)
    if random_state is not None and (not isinstance(random_state, int)
                                     or isinstance(random_state, bool) or random_state < 0):
        raise InvalidInputError("random_state", "must be a non-negative integer or None",
                                random_state)
    explainer.check(adapter)
    X = adapter.validate_inputs(inputs)
    base = _resolve_baselines(adapter, X, baselines, registered)
    if background is None and registered is not None:
        background = registered.background
    bg = None if background is None else adapter.validate_inputs(background, "background")

    schema = registered.schema if registered is not None else None
    names = tuple(feature_names) if feature_names is not None else (
        schema.columns if schema is not None else None)
    if names is not None and (X.ndim != 2 or len(names) != X.shape[1]):
        raise InvalidInputError("feature_names", f"needs one name per column ({X.shape[1:]})",
                                len(names))
    grouping = schema is not None if group_features is None else group_features
    if grouping and schema is None:
        raise InvalidInputError("group_features", "needs a registered model with a schema", True)
    group_cols: tuple[tuple[int, ...], ...] | None = None
    group_names: tuple[str, ...] | None = None
    if grouping and schema is not None:
        group_cols, group_names = schema.groups, schema.names
    if groups is not None:
        group_cols, group_names = _custom_groups(groups, schema, names)

    prediction = adapter.predict(X)
    resolved = _resolve_target(target, prediction, registered)
    problem = Problem(adapter=adapter, inputs=X, target=resolved, prediction=prediction,
                      baselines=base, background=bg, column_names=names,
                      groups=group_cols, group_names=group_names,
                      random_state=random_state)
    started = time.perf_counter()
    with seeded(random_state):
        result = explainer.run(problem)
    wall = time.perf_counter() - started

    explanation = Explanation(
        method=explainer.name,
        values=result.values,
        target=resolved,
        prediction=result.prediction if result.prediction is not None else prediction,
        output_space=result.output_space or adapter.output_space,
        parameters={**explainer.params(), **result.extra},
        library_versions=library_versions(),
        wall_time_s=wall,
        baseline=result.baseline,
        expected_value=result.expected_value,
        delta=result.delta,
        feature_names=result.feature_names if result.feature_names is not None else (
            names if result.values.ndim == 2 and names is not None
            and result.values.shape[1] == len(names) else None),
        seed=random_state,
        model=registered.identity if registered is not None else {
            "fingerprint": adapter.fingerprint()},
    )
    # Column-level attributions are summed into the features (or the requested groups).
    if group_cols is not None and group_names is not None and names is not None \
            and explanation.feature_names == names:
        explanation = explanation.grouped(group_cols, group_names)
    return explanation


def _custom_groups(groups: Mapping[str, Sequence[str]], schema: FeatureSchema | None,
                   columns: tuple[str, ...] | None
                   ) -> tuple[tuple[tuple[int, ...], ...], tuple[str, ...]]:
    """Column indices of each named group of features (or of columns)."""
    if not isinstance(groups, Mapping) or not groups:
        raise InvalidInputError("groups", "must be a non-empty mapping of name to features",
                                groups)
    if schema is not None:
        members = dict(zip(schema.names, schema.groups, strict=True))
    elif columns is not None:
        members = {c: (i,) for i, c in enumerate(columns)}
    else:
        raise InvalidInputError("groups", "needs a schema or feature_names to resolve names",
                                sorted(groups))
    seen: list[str] = []
    out = []
    for name, items in groups.items():
        if isinstance(items, str) or not isinstance(items, Sequence) or not items:
            raise InvalidInputError(f"groups[{name!r}]", "must be a non-empty list of names",
                                    items)
        unknown = [i for i in items if i not in members]
        if unknown:
            raise InvalidInputError(f"groups[{name!r}]", f"must name features of "
                                    f"{sorted(members)}", unknown)
        seen.extend(items)
        out.append(tuple(c for item in items for c in members[item]))
    if sorted(seen) != sorted(members):
        missing = sorted(set(members) - set(seen))
        repeated = sorted({s for s in seen if seen.count(s) > 1})
        raise InvalidInputError("groups", "must cover every feature exactly once",
                                {"missing": missing, "repeated": repeated})
    return tuple(out), tuple(str(k) for k in groups)
