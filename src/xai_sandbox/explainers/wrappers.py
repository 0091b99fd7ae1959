"""Methods that wrap other methods: SmoothGrad over any gradient method, and contrastive
explanations (why class A rather than class B) over any method.

Like Captum's ``NoiseTunnel`` these take a method rather than subclassing each one; unlike
it they wrap every registered method, this package's own Integrated Gradients included.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from xai_sandbox.errors import InvalidInputError, InvalidTargetError, UnknownMethodError
from xai_sandbox.explainers.base import (
    Explainer,
    Problem,
    Result,
    get_explainer,
    register_explainer,
)
from xai_sandbox.models.adapters import ModelAdapter

__all__ = ["Contrastive", "SmoothGrad"]


def _base(method: Any, params: Mapping[str, Any] | None, parameter: str) -> Explainer:
    """The base method, its errors naming the wrapper's parameters (``base_method``,
    ``base_params.<name>``)."""
    if params is not None and not isinstance(params, Mapping):
        raise InvalidInputError("base_params", "must be a mapping or None", params)
    if method in ("smoothgrad", "contrastive"):
        raise InvalidInputError(parameter, "must be a base method, not a wrapper", method)
    try:
        return get_explainer(method, **dict(params or {}))
    except UnknownMethodError as exc:
        raise UnknownMethodError(parameter, exc.rule, exc.value) from exc
    except InvalidInputError as exc:
        raise InvalidInputError(f"base_params.{exc.parameter}", exc.rule, exc.value) from exc


class _Wrapper(Explainer):
    """A method over a base method: it reads what its base reads."""

    base_method: str
    base_params: dict[str, Any]

    def _base(self) -> Explainer:
        return _base(self.base_method, self.base_params, "base_method")

    def uses(self) -> frozenset[str]:
        return self._base().uses()

    def stochastic(self) -> bool:
        return self.samples or self._base().stochastic()

    def mixed_precision(self) -> bool:
        return self._base().mixed_precision()

    def unused(self, problem: Problem) -> dict[str, str]:
        """What neither this method nor its base would use; the base's own parameters
        are named ``base_params.<name>``."""
        base = self._base()
        out = {arg: f"{why} (its base method, {base.name}, does not read it)"
               for arg, why in super().unused(problem).items()}
        for name, why in base.unused(problem).items():
            if name in base._given:
                out[f"base_params.{name}"] = why
            else:
                out.setdefault(name, why)
        return out


@register_explainer
class SmoothGrad(_Wrapper):
    """SmoothGrad (Smilkov et al. 2017): the mean of a gradient method over noisy copies.

    The noise is drawn from the problem's ``rng``, not from a global generator (Captum's
    ``NoiseTunnel`` draws from torch's).

    Parameters
    ----------
    base_method:
        Any registered gradient method (``saliency``, ``integrated_gradients``, ...).
    n_samples:
        Noisy copies per input. A base method that batches its own passes (Integrated
        Gradients) gets them all in one call; another is called on as many noisy rows
        per pass as the memory budget allows.
    noise_level:
        Standard deviation of the Gaussian noise as a fraction of each input's value range.
    base_params:
        Parameters of the base method.
    """

    name = "smoothgrad"
    summary = "mean of any gradient method over Gaussian-noised copies of the input"
    requires = "gradients"
    input_kinds = ("tabular", "image")
    samples = True

    def __init__(self, base_method: str = "saliency", n_samples: int = 20,
                 noise_level: float = 0.15, base_params: Mapping[str, Any] | None = None) -> None:
        self.base_method = base_method
        self.n_samples = n_samples
        self.noise_level = noise_level
        self.base_params = dict(base_params or {})

    def run(self, problem: Problem) -> Result:
        base = self._base()
        if base.requires != "gradients":
            raise InvalidInputError("base_method", "must be a gradient method", self.base_method)
        if not isinstance(self.n_samples, int) or self.n_samples < 1:
            raise InvalidInputError("n_samples", "must be a positive integer", self.n_samples)
        if not isinstance(self.noise_level, int | float) or self.noise_level < 0:
            raise InvalidInputError("noise_level", "must be a number >= 0", self.noise_level)
        base.check(problem.adapter)
        X = problem.inputs
        n, S = problem.n, self.n_samples
        axes = tuple(range(1, X.ndim))
        span = (X.max(axis=axes, keepdims=True) - X.min(axis=axes, keepdims=True)).astype(float)
        noise = problem.rng.standard_normal((S, *X.shape)) * (self.noise_level * span)[None]
        noisy = (X[None] + noise).astype(X.dtype).reshape(S * n, *X.shape[1:])
        baselines = (problem.baselines if problem.baselines.shape[0] == 1
                     else np.tile(problem.baselines, (S,) + (1,) * (X.ndim - 1)))
        sub = dataclasses.replace(problem, inputs=noisy, target=np.tile(problem.target, S),
                                  prediction=problem.adapter.predict(noisy), baselines=baselines)
        if base.name == "integrated_gradients":   # it sizes its own passes
            parts = [base.run(sub)]
        else:
            parts = []
            size = problem.batcher.size(problem.point_bytes(), S * n,
                                        cpu_cap=max(1, (1 << 20) // X[0].size))

            def step(start: int, stop: int) -> None:
                part = dataclasses.replace(
                    sub, inputs=noisy[start:stop], target=sub.target[start:stop],
                    prediction=sub.prediction[start:stop],
                    baselines=baselines if baselines.shape[0] == 1 else baselines[start:stop])
                parts.append(base.run(part))

            problem.batcher.run(S * n, size, step)
        stacked = np.concatenate([p.values for p in parts])
        values = stacked.reshape(S, n, *stacked.shape[1:]).mean(axis=0)
        res = parts[0]
        return Result(values=values, feature_names=res.feature_names,
                      output_space=res.output_space or problem.adapter.output_space,
                      extra={"base": {"method": base.name, **base.params()}})


class _ContrastModule(torch.nn.Module):
    """Outputs minus the foil's output; wraps the model without changing it."""

    def __init__(self, inner: torch.nn.Module, foil: int) -> None:
        super().__init__()
        self.inner = inner
        self.foil = foil

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.inner(x)
        return out - out[:, self.foil : self.foil + 1]


class _ContrastAdapter(ModelAdapter):
    """An adapter whose output k is ``f_k(x) - f_foil(x)``."""

    def __init__(self, inner: ModelAdapter, foil: int) -> None:
        self.inner = inner
        self.foil = foil
        self.framework = inner.framework
        self.input_kind = inner.input_kind
        self.output_space = "contrast"
        self.differentiable = inner.differentiable
        self.sample_shape = inner.sample_shape

    def predict(self, X: np.ndarray) -> np.ndarray:
        out = self.inner.predict(X)
        diff: np.ndarray = out - out[:, self.foil : self.foil + 1]
        return diff

    def forward_tensor(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner.forward_tensor(x)
        return out - out[:, self.foil : self.foil + 1]

    def torch_module(self) -> torch.nn.Module:
        return _ContrastModule(self.inner.torch_module(), self.foil).eval()

    def to_tensor(self, X: np.ndarray) -> torch.Tensor:
        to_tensor = getattr(self.inner, "to_tensor", None)
        if to_tensor is None:
            return torch.as_tensor(X, dtype=torch.float64)
        result: torch.Tensor = to_tensor(X)
        return result

    def embedding_module(self) -> torch.nn.Module:
        inner_emb = getattr(self.inner, "embedding_module", None)
        if inner_emb is None:
            raise InvalidInputError("embedding_layer", "is not set on this adapter", None)
        module: torch.nn.Module = inner_emb()
        return module

    def fingerprint(self) -> str:
        return self.inner.fingerprint()


@register_explainer
class Contrastive(_Wrapper):
    """Why the target class rather than the ``foil`` class.

    Explains ``f_target(x) - f_foil(x)`` with any registered method, so the attributions
    show what pushes the model towards the target and away from the foil. The output
    space is ``"contrast"``; ``parameters["contrast_of"]`` names the space of the two
    outputs (logits, probabilities).
    """

    name = "contrastive"
    summary = "why class A rather than class B: any method on the output difference"

    def __init__(self, foil: int, base_method: str = "integrated_gradients",
                 base_params: Mapping[str, Any] | None = None) -> None:
        self.foil = foil
        self.base_method = base_method
        self.base_params = dict(base_params or {})

    def run(self, problem: Problem) -> Result:
        k = problem.prediction.shape[1]
        if not isinstance(self.foil, int | np.integer) or isinstance(self.foil, bool) \
                or not 0 <= int(self.foil) < k:
            raise InvalidTargetError("foil", f"must be a class index in [0, {k})", self.foil)
        if (problem.target == int(self.foil)).any():
            raise InvalidTargetError("foil", "must differ from the target class",
                                     int(self.foil))
        base = self._base()
        if base.requires == "trees":
            raise InvalidInputError("base_method", "must not be a tree method (explain each "
                                    "class's margin instead)", self.base_method)
        adapter = _ContrastAdapter(problem.adapter, int(self.foil))
        base.check(adapter)
        sub = dataclasses.replace(problem, adapter=adapter,
                                  prediction=adapter.predict(problem.inputs))
        res = base.run(sub)
        return dataclasses.replace(
            res, output_space="contrast", prediction=sub.prediction,
            extra={**res.extra, "foil": int(self.foil),
                   "contrast_of": problem.adapter.output_space,
                   "base": {"method": base.name, **base.params()}})
