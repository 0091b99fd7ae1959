"""Gradient methods through Captum: Saliency, Gradient x Input, DeepLift and LRP.

Each class stores its parameters and hands the work to Captum; what is added here is the
validation at the boundary, per-row targets, the convergence delta where the method has
one, a baseline for Gradient x Input when one is given, and for LRP a refusal of layers it
cannot handle plus a conservation check, since Captum's LRP returns nonsense on
unsupported architectures without a warning.

All of them explain the model's output as it is (``output_space`` is the model's: logits
for a torch classifier unless it was registered otherwise).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from captum.attr import (
    LRP,
    DeepLift,
    InputXGradient,
    LayerActivation,
    LayerGradientXActivation,
    Saliency,
)

from xai_sandbox.errors import ExplanationError, InvalidInputError, UnsupportedModelError
from xai_sandbox.explainers.base import Explainer, Problem, Result, register_explainer
from xai_sandbox.models.adapters import model_errors

__all__ = ["DeepLiftExplainer", "GradientXInput", "LayerwiseRelevance", "SaliencyExplainer"]


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().cpu().numpy()


def _target(problem: Problem) -> torch.Tensor:
    return torch.as_tensor(problem.target, dtype=torch.long, device=problem.batcher.device)


@register_explainer
class SaliencyExplainer(Explainer):
    """The absolute input gradient by default (Simonyan et al. 2014), through Captum's
    ``Saliency``.

    ``|df/dx|``: how sensitive the output is to each input, without its sign, so it says
    nothing about direction. ``absolute=False`` gives the signed gradient ``df/dx``.
    Saliency has no baseline and refuses ``baselines=``.

    Parameters
    ----------
    absolute:
        ``True`` (default): ``|df/dx|``; ``False``: ``df/dx``.
    """

    name = "saliency"
    summary = ("absolute gradient |df/dx| of the output per input by default (signed with "
               "absolute=False)")
    requires = "gradients"
    input_kinds = ("tabular", "image")

    def __init__(self, absolute: bool = True) -> None:
        self.absolute = absolute

    def run(self, problem: Problem) -> Result:
        if not isinstance(self.absolute, bool):
            raise InvalidInputError("absolute", "must be true or false", self.absolute)
        problem.adapter.torch_module()
        x = problem.grad_tensor(problem.inputs)
        with model_errors(problem.inputs.shape):
            attr = Saliency(problem.adapter.forward_tensor).attribute(
                x, target=_target(problem), abs=self.absolute)
        return Result(values=_np(attr), output_space=problem.adapter.output_space)


@register_explainer
class GradientXInput(Explainer):
    """Gradient times input: ``x * df/dx(x)`` (Captum's ``InputXGradient``), or with a
    baseline ``b``, ``(x - b) * df/dx(x)``.

    The gradient is always taken at the input. Without ``baselines`` the baseline is zero
    (the registered model's reference row is not used implicitly, so the result is
    Captum's); with them the attributions are relative to ``b``, and for a linear model
    they sum to ``f(x) - f(b)``. For token models, ``baselines`` are token ids: the
    embedding layer's gradient times ``emb(x) - emb(b)`` (times ``emb(x)`` without
    them), summed over the embedding dimension, gives one value per token.
    """

    name = "gradient_x_input"
    summary = ("gradient times input, x * df/dx; (x - b) * df/dx with baselines; per token "
               "through the embedding layer")
    requires = "gradients"
    reads = frozenset({"baselines"})

    def run(self, problem: Problem) -> Result:
        module = problem.adapter.torch_module()
        given = "baselines" in problem.given
        target = _target(problem)
        with model_errors(problem.inputs.shape):
            if problem.adapter.input_kind == "tokens":
                emb = problem.adapter.embedding_module()  # type: ignore[attr-defined]
                x = problem.tensor(problem.inputs)
                if not given:
                    attr = LayerGradientXActivation(module, emb).attribute(x, target=target)
                else:
                    grad = LayerGradientXActivation(module, emb, multiply_by_inputs=False
                                                    ).attribute(x, target=target)
                    activation = LayerActivation(module, emb)
                    with torch.no_grad():
                        moved = activation.attribute(x) - activation.attribute(
                            problem.tensor(problem.baseline_rows()))
                    attr = grad * moved
                values = _np(attr.sum(dim=-1))
            elif not given:
                values = _np(InputXGradient(problem.adapter.forward_tensor).attribute(
                    problem.grad_tensor(problem.inputs), target=target))
            else:
                grad = Saliency(problem.adapter.forward_tensor).attribute(
                    problem.grad_tensor(problem.inputs), target=target, abs=False)
                values = (problem.inputs.astype(np.float64)
                          - problem.baseline_rows().astype(np.float64)) * _np(grad)
        return Result(values=values, baseline=problem.baselines if given else None,
                      output_space=problem.adapter.output_space)


@register_explainer
class DeepLiftExplainer(Explainer):
    """DeepLift (Shrikumar et al. 2017) with the Rescale rule, through Captum."""

    name = "deeplift"
    summary = "DeepLift rescale rule against a baseline; completeness delta reported"
    requires = "gradients"
    input_kinds = ("tabular", "image")
    reads = frozenset({"baselines"})

    def run(self, problem: Problem) -> Result:
        module = problem.adapter.torch_module()
        x = problem.grad_tensor(problem.inputs)
        b = problem.tensor(problem.baseline_rows())
        with model_errors(problem.inputs.shape), warnings.catch_warnings():
            # Captum announces the hooks it puts on activations (and removes afterwards).
            warnings.filterwarnings("ignore", message="Setting forward, backward hooks")
            attr, delta = DeepLift(module).attribute(
                x, baselines=b, target=_target(problem), return_convergence_delta=True)
            with torch.no_grad():
                f_b = problem.adapter.forward_tensor(b)
        expected = _np(f_b)[np.arange(problem.n), problem.target]
        return Result(values=_np(attr), delta=_np(delta), expected_value=expected,
                      baseline=problem.baselines, output_space=problem.adapter.output_space)


def _lrp_layers() -> tuple[tuple[type[torch.nn.Module], ...], tuple[type[torch.nn.Module], ...]]:
    import captum.attr._core.lrp as lrp_core

    return (tuple(lrp_core.SUPPORTED_LAYERS_WITH_RULES),
            tuple(lrp_core.SUPPORTED_NON_LINEAR_LAYERS))


@register_explainer
class LayerwiseRelevance(Explainer):
    """Layer-wise relevance propagation (epsilon rule), through Captum's ``LRP``.

    Refuses models with layers Captum has no rule for, and raises if relevance is not
    conserved to within ``max_conservation_error`` of the explained output (it leaks
    through biases, so some error is normal; residual connections break it entirely).
    """

    name = "lrp"
    summary = "layer-wise relevance propagation; refuses unsupported layers, checks conservation"
    requires = "gradients"
    input_kinds = ("tabular", "image")

    def __init__(self, max_conservation_error: float = 0.5) -> None:
        self.max_conservation_error = max_conservation_error

    def run(self, problem: Problem) -> Result:
        if not isinstance(self.max_conservation_error, int | float) or \
                self.max_conservation_error <= 0:
            raise InvalidInputError("max_conservation_error", "must be a positive number",
                                    self.max_conservation_error)
        module = problem.adapter.torch_module()
        with_rules, nonlinear = _lrp_layers()
        for name, layer in module.named_modules():
            if list(layer.children()):
                continue
            if not isinstance(layer, with_rules + nonlinear):
                raise UnsupportedModelError(
                    "model", "LRP supports only layers with a propagation rule "
                    f"({sorted(t.__name__ for t in with_rules + nonlinear)})",
                    f"{name}: {type(layer).__name__}")
        added = [m for m in module.modules() if not hasattr(m, "rule")]
        x = problem.grad_tensor(problem.inputs)
        try:
            with model_errors(problem.inputs.shape):
                attr, delta = LRP(module).attribute(x, target=_target(problem),
                                                    return_convergence_delta=True)
        finally:
            for m in added:  # Captum leaves a `rule` attribute on every layer it visited
                if "rule" in vars(m):
                    delattr(m, "rule")
        out = problem.prediction[np.arange(problem.n), problem.target]
        err = np.abs(_np(delta)) / np.maximum(np.abs(out), 1e-12)
        if float(err.max()) > self.max_conservation_error:
            raise ExplanationError(
                f"lrp: relevance is not conserved (relative error {float(err.max()):.3g} > "
                f"max_conservation_error {self.max_conservation_error}); the architecture is "
                "outside what LRP's rules handle")
        return Result(values=_np(attr), delta=_np(delta), expected_value=np.zeros(problem.n),
                      output_space=problem.adapter.output_space, extra={"rule": "epsilon"})


