"""Gradient methods through Captum: Saliency, Gradient x Input, DeepLift and LRP.

Each class stores its parameters and hands the work to Captum; what is added here is the
validation at the boundary, per-row targets, the convergence delta where the method has
one, and for LRP a refusal of layers it cannot handle plus a conservation check, since
Captum's LRP returns nonsense on unsupported architectures without a warning.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from captum.attr import LRP, DeepLift, InputXGradient, LayerGradientXActivation, Saliency

from xai_sandbox.errors import ExplanationError, InvalidInputError, UnsupportedModelError
from xai_sandbox.explainers.base import Explainer, Problem, Result, register_explainer
from xai_sandbox.models.adapters import model_errors

__all__ = ["DeepLiftExplainer", "GradientXInput", "LayerwiseRelevance", "SaliencyExplainer"]


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().cpu().numpy()


def _target(problem: Problem) -> torch.Tensor:
    return torch.as_tensor(problem.target, dtype=torch.long)


@register_explainer
class SaliencyExplainer(Explainer):
    """Absolute input gradient (Simonyan et al. 2014), through Captum's ``Saliency``."""

    name = "saliency"
    summary = "absolute gradient of the output with respect to each input"
    requires = "gradients"
    input_kinds = ("tabular", "image")

    def __init__(self, absolute: bool = True) -> None:
        self.absolute = absolute

    def run(self, problem: Problem) -> Result:
        problem.adapter.torch_module()
        x = problem.grad_tensor(problem.inputs)
        with model_errors(problem.inputs.shape):
            attr = Saliency(problem.adapter.forward_tensor).attribute(
                x, target=_target(problem), abs=bool(self.absolute))
        return Result(values=_np(attr))


@register_explainer
class GradientXInput(Explainer):
    """Gradient times input, through Captum's ``InputXGradient``.

    For token models the embedding layer's gradient times its activation, summed over the
    embedding dimension, gives one value per token.
    """

    name = "gradient_x_input"
    summary = "gradient times input; per token through the embedding layer"
    requires = "gradients"

    def run(self, problem: Problem) -> Result:
        module = problem.adapter.torch_module()
        with model_errors(problem.inputs.shape):
            if problem.adapter.input_kind == "tokens":
                emb = problem.adapter.embedding_module()  # type: ignore[attr-defined]
                attr = LayerGradientXActivation(module, emb).attribute(
                    problem.tensor(problem.inputs), target=_target(problem))
                return Result(values=_np(attr.sum(dim=-1)))
            attr = InputXGradient(problem.adapter.forward_tensor).attribute(
                problem.grad_tensor(problem.inputs), target=_target(problem))
        return Result(values=_np(attr))


@register_explainer
class DeepLiftExplainer(Explainer):
    """DeepLift (Shrikumar et al. 2017) with the Rescale rule, through Captum."""

    name = "deeplift"
    summary = "DeepLift rescale rule against a baseline; completeness delta reported"
    requires = "gradients"
    input_kinds = ("tabular", "image")

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
                      baseline=problem.baselines)


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
                      extra={"rule": "epsilon"})


