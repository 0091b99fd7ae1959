"""The explainer registry and the one verb, :func:`explain`.

Every method is a class registered under a name. Its constructor only stores parameters;
the work happens in :meth:`Explainer.run`, which receives a validated :class:`Problem` and
returns a :class:`Result`. :func:`explain` validates everything at the boundary, runs the
method, times it and wraps the result in an :class:`Explanation` with full provenance.

No argument is silently ignored: a parameter the method does not have, or one it would not
use on this input (``baselines`` for saliency, ``tolerance`` with a fixed ``n_steps``,
``window`` on tabular occlusion), is an :class:`InvalidInputError` naming it. Every
explanation says which output space its numbers are in, one of :data:`OUTPUT_SPACES`.
"""

from __future__ import annotations

import inspect
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from xai_sandbox.errors import (
    ExplanationError,
    InvalidInputError,
    NotDifferentiableError,
    UnknownMethodError,
    UnsupportedModelError,
)
from xai_sandbox.explainers.arguments import (
    custom_groups,
    place,
    resolve_baselines,
    resolve_target,
)
from xai_sandbox.explainers.explanation import Explanation, library_versions
from xai_sandbox.models.accelerator import Batcher, autocast, point_bytes, precision_name
from xai_sandbox.models.adapters import InputKind, ModelAdapter, wrap
from xai_sandbox.models.registry import RegisteredModel

__all__ = ["EXPLAINERS", "OUTPUT_SPACES", "REGISTRY", "Explainer", "Problem", "Result",
           "available_methods", "explain", "get_explainer", "random_generators",
           "register_explainer"]

Requirement = Literal["gradients", "trees", "any"]
# What a method runs on: "array" methods on the validated arrays of a Problem (tabular,
# image and token inputs), "text" methods on a text model and its texts
# (xai_sandbox.text registers them when it is imported).
Family = Literal["array", "text"]

OUTPUT_SPACES: Mapping[str, str] = {
    "logit": "unnormalised class scores that a softmax turns into probabilities (the "
             "default of a torch classifier)",
    "probability": "class probabilities (a scikit-learn-API estimator's predict_proba)",
    "log_probability": "log-probabilities of the classes or tokens",
    "log_odds": "log(p / (1 - p)) of a binary outcome",
    "margin": "a tree ensemble's raw score before its link function: the log-odds of "
              "class 1 for a binary booster (class 0's is its negative), per-class "
              "softmax inputs for a multiclass one",
    "output": "the model's raw output where it is not a probability (regression, "
              "decision scores)",
    "contrast": "the difference of two outputs, target minus foil, in the model's space",
}
"""The output spaces an :class:`Explanation` can be in: the unit of its attributions and
of ``prediction`` and ``expected_value``. A model adapter's ``output_space`` must be one."""

#: The arguments of :func:`explain` that only some methods read (see ``Explainer.reads``).
OPTIONAL_ARGUMENTS = ("baselines", "background")


def random_generators(random_state: int | None
                      ) -> tuple[np.random.Generator, torch.Generator]:
    """A method's own random streams: a numpy ``Generator`` and a CPU ``torch.Generator``,
    both built from ``random_state`` (fresh entropy when it is ``None``).

    Nothing global is seeded or read: two jobs in two threads draw from their own streams,
    so neither changes the other's results.
    """
    if random_state is None:
        torch_generator = torch.Generator()
        torch_generator.seed()
        return np.random.default_rng(), torch_generator
    return (np.random.default_rng(random_state),
            torch.Generator().manual_seed(random_state % 2**63))


def _fresh_torch_generator() -> torch.Generator:
    return random_generators(None)[1]


@dataclass(frozen=True)
class Problem:
    """A validated explanation request, as every explainer receives it.

    ``rng`` and ``torch_generator`` are the method's random streams, built from
    ``random_state`` by :func:`explain` (see :func:`random_generators`). A method that
    samples draws only from them, never from numpy's or torch's global generators; a
    sub-problem made with ``dataclasses.replace`` shares them, so the draws of a wrapper
    and its base method follow one stream.

    ``batcher`` sizes the method's passes to the memory budget of the device the adapter
    is on and records them; ``precision`` is the autocast dtype (``None``: float32).
    """

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
    given: frozenset[str] = frozenset()  # of OPTIONAL_ARGUMENTS, those the caller passed
    rng: np.random.Generator = field(default_factory=np.random.default_rng, compare=False,
                                     repr=False)
    torch_generator: torch.Generator = field(default_factory=_fresh_torch_generator,
                                             compare=False, repr=False)
    batcher: Batcher = field(default_factory=lambda: Batcher.for_device(torch.device("cpu")),
                             compare=False, repr=False)
    precision: torch.dtype | None = None

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

    def point_bytes(self) -> int:
        """Bytes one input row costs in a forward and backward pass of the model (the
        saved activations and their gradients), measured once per model and input shape
        (:func:`~xai_sandbox.models.accelerator.point_bytes`)."""
        row = self.inputs[:1]
        fallback = max(1, 16 * row.nbytes)
        forward = getattr(self.adapter, "forward_tensor", None)
        if forward is None:
            return fallback
        device, precision = self.batcher.device, self.precision

        def probe(k: int) -> None:
            x = self.tensor(np.repeat(row, k, axis=0))
            if x.is_floating_point():
                x.requires_grad_(True)
            with torch.enable_grad(), autocast(device, precision):
                out = forward(x)
            if x.requires_grad:
                torch.autograd.grad(out.float().sum(), x)

        key = (row.shape[1:], str(row.dtype), str(device), precision_name(precision))
        return point_bytes(self.adapter, key, probe, device, fallback)

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
    output_space: str | None = None  # one of OUTPUT_SPACES; None: the model's own
    prediction: np.ndarray | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


class Explainer(ABC):
    """Base class of every explanation method.

    Subclasses set ``name``, ``summary``, ``requires``, ``input_kinds``, ``reads`` and
    ``samples``, store their parameters in ``__init__`` and implement :meth:`run`, whose
    :class:`Result` names its ``output_space``. Where a parameter matters only on some
    inputs, :meth:`unused` says so.

    Attributes
    ----------
    family:
        ``"array"`` (the default): :func:`explain` validates the inputs into a
        :class:`Problem` and calls :meth:`run`. Another family's methods (``"text"``)
        read their model and inputs themselves: :func:`explain` checks their parameters
        and ``random_state`` and calls :meth:`explain_model`.
    needs:
        What the method needs, in words, where ``requires`` does not say it.
    reads:
        The optional arguments of :func:`explain` the method uses (``"baselines"``,
        ``"background"``); passing another one is an error.
    samples:
        Whether the method draws random numbers, so that its result depends on
        ``random_state``. Every method accepts ``random_state`` (it is recorded as the
        explanation's ``seed``); one that does not sample gives the same values for
        every seed. One that samples draws from ``problem.rng`` or
        ``problem.torch_generator`` only.
    autocasts:
        Whether the method runs its passes in ``problem.precision`` (``dtype=`` of
        :func:`explain`) and checks its sums in float32; others refuse ``dtype``.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    requires: ClassVar[Requirement] = "any"
    input_kinds: ClassVar[tuple[InputKind, ...]] = ("tabular", "image", "tokens")
    reads: ClassVar[frozenset[str]] = frozenset()
    samples: ClassVar[bool] = False
    autocasts: ClassVar[bool] = False
    family: ClassVar[Family] = "array"
    needs: ClassVar[str | None] = None
    # The constructor parameters the caller gave by name (set by get_explainer).
    _given: frozenset[str] = frozenset()

    def params(self) -> dict[str, Any]:
        """The constructor's parameters, JSON-safe, for provenance."""
        return {k: _json_safe(v) for k, v in vars(self).items() if not k.startswith("_")}

    def uses(self) -> frozenset[str]:
        """The optional arguments of :func:`explain` this method reads (wrappers: their
        base method's)."""
        return self.reads

    def stochastic(self) -> bool:
        """Whether this instance draws random numbers (wrappers: whether they or their
        base method do)."""
        return self.samples

    def mixed_precision(self) -> bool:
        """Whether this instance accepts ``dtype=`` (wrappers: whether their base does)."""
        return self.autocasts

    def unused(self, problem: Problem) -> dict[str, str]:
        """The arguments the caller gave that this run would not use, each with why.

        The base rule covers the optional arguments of :func:`explain`; a method whose
        own parameters matter only on some inputs adds them (see ``_unless``).
        """
        uses = self.uses()
        return {arg: f"{self.name} does not use {arg}" + _WHO_READS[arg]
                for arg in sorted(problem.given - uses)}

    def _unless(self, condition: bool, names: Sequence[str], why: str) -> dict[str, str]:
        """``{name: why}`` for each of ``names`` the caller gave, unless ``condition``."""
        return {} if condition else {n: why for n in names if n in self._given}

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

    def explain_model(self, model: Any, inputs: Any, *, random_state: int | None,
                      given: Mapping[str, Any]) -> Explanation:
        """The whole explanation, for a method outside the ``"array"`` family.

        ``given`` holds the arguments of :func:`explain` the caller passed (``target``,
        ``baselines``, ...); a method refuses, by name, those it does not use.
        """
        raise UnsupportedModelError("method", f"{self.name} runs on the validated arrays "
                                    "of explain()", self.family)


_WHO_READS = {
    "baselines": " (methods with a reference input do: integrated_gradients, "
                 "gradient_x_input, deeplift, occlusion, lime, and the Shapley methods "
                 "without a background)",
    "background": " (only the Shapley methods average over a background: exact_shapley, "
                  "kernel_shap, tree_shap)",
}


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


_REGISTRY: dict[str, type[Explainer]] = {}
#: The one registry of methods, every family (read-only; :func:`register_explainer` adds).
REGISTRY: Mapping[str, type[Explainer]] = MappingProxyType(_REGISTRY)


class _Family(MutableMapping[str, type[Explainer]]):
    """The registered methods of one family: a live view of the one registry."""

    def __init__(self, family: Family) -> None:
        self.family = family

    def __getitem__(self, name: str) -> type[Explainer]:
        cls = _REGISTRY[name]
        if cls.family != self.family:
            raise KeyError(name)
        return cls

    def __setitem__(self, name: str, cls: type[Explainer]) -> None:
        _REGISTRY[name] = cls

    def __delitem__(self, name: str) -> None:
        self[name]  # a KeyError for another family's name
        del _REGISTRY[name]

    def __iter__(self) -> Iterator[str]:
        return iter([n for n, c in _REGISTRY.items() if c.family == self.family])

    def __len__(self) -> int:
        return sum(1 for c in _REGISTRY.values() if c.family == self.family)


#: The ``"array"`` methods (tabular, image and token inputs), as before the text methods
#: joined the registry: what a decision policy and the quality gate may name.
EXPLAINERS: MutableMapping[str, type[Explainer]] = _Family("array")


def methods_of(family: Family) -> MutableMapping[str, type[Explainer]]:
    """The registered methods of one family (a live view of :data:`REGISTRY`)."""
    return _Family(family)


def register_explainer(cls: type[Explainer]) -> type[Explainer]:
    """Class decorator: add a method, of any family, to the registry under ``cls.name``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise InvalidInputError("name", "is already registered", cls.name)
    _REGISTRY[cls.name] = cls
    return cls


def get_explainer(method: str, **params: Any) -> Explainer:
    """Instantiate a registered explainer; unknown names list the valid ones, and a
    parameter the method does not have is an error naming it."""
    cls = _REGISTRY.get(method) if isinstance(method, str) else None
    if cls is None:
        raise UnknownMethodError("method", f"must be one of {sorted(_REGISTRY)}", method)
    signature = inspect.signature(cls)
    known = list(signature.parameters)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise InvalidInputError(unknown[0], f"{method} does not take this parameter (its "
                                f"parameters: {known})", params[unknown[0]])
    missing = [n for n, p in signature.parameters.items()
               if p.default is inspect.Parameter.empty and n not in params]
    if missing:
        raise InvalidInputError(missing[0], f"is required by {method}", None)
    explainer = cls(**params)
    explainer._given = frozenset(params)
    return explainer


def available_methods(family: Family | None = None) -> list[tuple[str, str, str]]:
    """(name, what it needs, one-line summary) of every registered method, or of one
    family's (the text methods are registered once ``xai_sandbox.text`` is imported)."""
    return [(name, cls.needs or cls.requires, cls.summary)
            for name, cls in sorted(_REGISTRY.items())
            if family is None or cls.family == family]


def explain(model: Any, inputs: Any, *, method: str, target: Any = None,
            baselines: Any = None, background: Any = None, random_state: int | None = None,
            feature_names: Sequence[str] | None = None, group_features: bool | None = None,
            groups: Mapping[str, Sequence[str]] | None = None, device: Any = None,
            dtype: Any = None, memory_budget: int | None = None, **params: Any
            ) -> Explanation:
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
        reference row, else zeros. Only methods with a reference input take it
        (``Explainer.reads``); ``gradient_x_input`` takes it only when given.
    background:
        Rows that Shapley methods average over; defaults to the registered model's. Only
        the Shapley methods take it.
    random_state:
        Seed for methods that sample; the same seed gives the same result. Every method
        accepts it and records it as the explanation's ``seed``; one that does not
        sample (``Explainer.stochastic()``) gives the same values for every seed.
    feature_names:
        Column names (taken from the schema of a registered model).
    group_features:
        Explain one-hot columns of one feature as one feature (default: yes when the
        registered model has a schema).
    groups:
        Coarser groups to explain instead, ``{"liquidity": ["checking_status", "savings"],
        ...}``: each name maps to features of the schema (or to column names without a
        schema); together they must cover every feature once.
    device:
        Where a torch model runs: ``None`` (where it is), ``"auto"`` (a GPU when torch
        sees one), ``"cpu"``, ``"cuda"``, ``"cuda:N"``. The caller's model is never
        moved: a copy is made once per device. Results come back as numpy either way.
    dtype:
        ``"float16"`` or ``"bfloat16"``: autocast passes, sums and the completeness check
        in float32, failing rows rerun in float32 (methods with ``mixed_precision``).
    memory_budget:
        Bytes one pass may use (default: 80% of free CUDA memory, or the CPU budget of
        ``XAI_SANDBOX_CPU_MEMORY_BUDGET_MB``). The explanation's ``device``, ``dtype``
        and ``batching`` parameters record what ran.
    **params:
        Parameters of the method (``n_steps``, ``layer``, ``n_samples``, ...).

    Raises
    ------
    InvalidInputError
        Naming the argument, for a parameter the method does not have and for an
        argument it would not use on these inputs (``baselines`` for ``saliency``,
        ``background`` outside the Shapley methods, ``tolerance`` with a fixed
        ``n_steps``, ``window`` for occlusion of tabular features): nothing given is
        silently ignored.
    UnsupportedModelError
        When the model's ``output_space`` is not one of :data:`OUTPUT_SPACES`.

    The explanation's ``output_space`` says what its numbers are (see
    :data:`OUTPUT_SPACES`): the model's own output space for most methods, ``"margin"``
    for TreeSHAP of a booster, ``"contrast"`` for contrastive explanations.
    """
    found = _REGISTRY.get(method) if isinstance(method, str) else None
    if found is not None and found.family != "array":
        # A text method: it reads the model and its inputs itself.
        other = get_explainer(method, **params)
        if random_state is not None and (not isinstance(random_state, int)
                                         or isinstance(random_state, bool) or random_state < 0):
            raise InvalidInputError("random_state", "must be a non-negative integer or None",
                                    random_state)
        passed_args = {"target": target, "baselines": baselines, "background": background,
                       "feature_names": feature_names, "group_features": group_features,
                       "groups": groups}
        return other.explain_model(model, inputs, random_state=random_state, given={
            k: v for k, v in passed_args.items() if v is not None})
    # The optional arguments the caller gave, before any default fills them in.
    given = frozenset(name for name, value in (("baselines", baselines),
                                               ("background", background))
                      if value is not None)
    passed = {"baselines": baselines, "background": background, **params}
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
    adapter, batcher, precision = place(adapter, device, dtype, memory_budget,
                                        explainer.mixed_precision(), explainer.name)
    if adapter.output_space not in OUTPUT_SPACES:
        raise UnsupportedModelError("model.output_space", f"must be one of "
                                    f"{sorted(OUTPUT_SPACES)}", adapter.output_space)
    X = adapter.validate_inputs(inputs)
    base = resolve_baselines(adapter, X, baselines, registered)
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
        group_cols, group_names = custom_groups(groups, schema, names)

    prediction = adapter.predict(X)
    resolved = resolve_target(target, prediction, registered)
    rng, torch_generator = random_generators(random_state)
    problem = Problem(adapter=adapter, inputs=X, target=resolved, prediction=prediction,
                      baselines=base, background=bg, column_names=names,
                      groups=group_cols, group_names=group_names,
                      random_state=random_state, given=given, rng=rng,
                      torch_generator=torch_generator, batcher=batcher, precision=precision)
    unused = explainer.unused(problem)
    if unused:
        name = sorted(unused)[0]
        head, _, rest = name.partition(".")  # "base_params.tolerance" of a wrapper
        value = passed.get(head)
        raise InvalidInputError(name, unused[name], value.get(rest) if rest and isinstance(
            value, Mapping) else value)
    started = time.perf_counter()
    # Gradients are taken even under a caller's torch.inference_mode() or no_grad().
    with torch.inference_mode(False), torch.enable_grad():
        result = explainer.run(problem)
    wall = time.perf_counter() - started
    # Every built-in method names its space; None (a plug-in's) means the model's own.
    space = result.output_space if result.output_space is not None else adapter.output_space
    if space not in OUTPUT_SPACES:
        raise ExplanationError(f"{explainer.name}: the result's output_space must be one of "
                               f"{sorted(OUTPUT_SPACES)}; got {space!r}")

    explanation = Explanation(
        method=explainer.name,
        values=result.values,
        target=resolved,
        prediction=result.prediction if result.prediction is not None else prediction,
        output_space=space,
        parameters={**explainer.params(), **result.extra, "device": str(batcher.device),
                    "dtype": precision_name(precision), "batching": batcher.record()},
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
