"""Class activation maps: Grad-CAM (through Captum) and Grad-CAM++ (written here).

Grad-CAM (Selvaraju et al. 2017) weighs each channel k of a convolutional layer's
activation A by the spatial mean of the class score's gradient and keeps the positive part
of the weighted sum. Captum's ``LayerGradCam`` computes exactly that.

Grad-CAM++ (Chattopadhay et al. 2018, eq. 19) weighs each location too. With the class
score passed through the exponential, ``Y = exp(S)``, the higher derivatives reduce to
powers of the first gradient ``g = dS/dA`` for piecewise-linear networks, and::

    alpha_ij^k = g_ij^2 / (2 g_ij^2 + sum_ab A_ab^k g_ij^3)     (0 where the denominator is 0)
    w_k        = sum_ij alpha_ij^k relu(g_ij^k)
    L          = relu(sum_k w_k A^k)

The paper's weights carry one more factor exp(S), the same for every channel and location
of one image: it rescales the map without changing its shape, and overflows float32 for
logits above 88, so it is left out (``exp_score_factor`` in the result gives it).
"""

from __future__ import annotations

import numpy as np
import torch
from captum.attr import LayerAttribution, LayerGradCam
from torch.nn import functional

from xai_sandbox.errors import InvalidInputError
from xai_sandbox.explainers.base import Explainer, Problem, Result, register_explainer
from xai_sandbox.models.adapters import model_errors
from xai_sandbox.models.sandbox import HookSandbox

__all__ = ["GradCam", "GradCamPlusPlus", "default_cam_layer", "grad_cam_plus_plus_map"]


def default_cam_layer(module: torch.nn.Module) -> str:
    """Name of the last Conv2d layer of the model."""
    convs = [str(n) for n, m in module.named_modules() if isinstance(m, torch.nn.Conv2d)]
    if not convs:
        raise InvalidInputError("layer", "the model has no Conv2d layer; name one explicitly",
                                None)
    return convs[-1]


def _layer(module: torch.nn.Module, name: str | None) -> tuple[str, torch.nn.Module]:
    layer = name if name is not None else default_cam_layer(module)
    named = dict(module.named_modules())
    if not isinstance(layer, str) or layer not in named or layer == "":
        raise InvalidInputError("layer", "must name a submodule of the model", layer)
    return layer, named[layer]


def _upsample(cam: torch.Tensor, size: tuple[int, int], upsample: bool) -> torch.Tensor:
    return LayerAttribution.interpolate(cam, size, "bilinear") if upsample else cam


def grad_cam_plus_plus_map(activation: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ map ``(n, 1, h, w)`` from a layer's activation and score gradient."""
    A, g = activation.double(), gradient.double()
    g2, g3 = g * g, g * g * g
    sum_a = A.sum(dim=(2, 3), keepdim=True)
    denom = 2.0 * g2 + sum_a * g3
    alpha = torch.where(denom != 0, g2 / torch.where(denom != 0, denom, 1.0),
                        torch.zeros_like(g2))
    weights = (alpha * functional.relu(g)).sum(dim=(2, 3), keepdim=True)
    return functional.relu((weights * A).sum(dim=1, keepdim=True))


class _CamBase(Explainer):
    requires = "gradients"
    input_kinds = ("image",)

    def __init__(self, layer: str | None = None, upsample: bool = True) -> None:
        self.layer = layer
        self.upsample = upsample


@register_explainer
class GradCam(_CamBase):
    """Grad-CAM on a convolutional layer (default: the last Conv2d), via Captum.

    Values are ``(n, 1, H, W)`` at the input's resolution (``upsample=False`` keeps the
    layer's resolution).
    """

    name = "grad_cam"
    summary = "Grad-CAM heatmap of a convolutional layer (Captum LayerGradCam)"

    def run(self, problem: Problem) -> Result:
        module = problem.adapter.torch_module()
        name, layer = _layer(module, self.layer)
        x = problem.grad_tensor(problem.inputs)
        with model_errors(problem.inputs.shape):
            cam = LayerGradCam(problem.adapter.forward_tensor, layer).attribute(
                x, target=torch.as_tensor(problem.target, device=x.device), relu_attributions=True)
        _check_maps(name, cam)
        out = _upsample(cam.detach(), tuple(x.shape[-2:]), self.upsample)  # type: ignore[arg-type]
        return Result(values=out.double().cpu().numpy(),
                      output_space=problem.adapter.output_space, extra={"layer": name})


def _check_maps(name: str, maps: torch.Tensor) -> None:
    if maps.dim() != 4:
        raise InvalidInputError("layer", "must output (n, channels, h, w) feature maps",
                                f"{name}: {tuple(maps.shape)}")


@register_explainer
class GradCamPlusPlus(_CamBase):
    """Grad-CAM++ (Chattopadhay et al. 2018) with the exponential score, as in the paper.

    Activations and gradients come from the hook sandbox, so the model is never changed.
    """

    name = "grad_cam_pp"
    summary = "Grad-CAM++: location-weighted class activation map (Chattopadhay et al. 2018)"

    def run(self, problem: Problem) -> Result:
        module = problem.adapter.torch_module()
        name, _ = _layer(module, self.layer)
        x = problem.tensor(problem.inputs)
        with HookSandbox(module, [name]) as box:
            out = box.run(x, torch.as_tensor(problem.target, device=x.device))
            record = box.records()[name]
        _check_maps(name, record.activation)
        if record.gradient is None:
            raise InvalidInputError("layer", "must lie on the path to the output (no gradient "
                                    "reached it)", name)
        cam = grad_cam_plus_plus_map(record.activation, record.gradient)
        values = _upsample(cam, tuple(x.shape[-2:]), self.upsample)  # type: ignore[arg-type]
        score = out.double().cpu()[torch.arange(problem.n), torch.as_tensor(problem.target)]
        return Result(values=values.cpu().numpy(), output_space=problem.adapter.output_space,
                      extra={"layer": name,
                             "exp_score_factor": [float(np.exp(min(s, 700.0)))
                                                  for s in score.tolist()]})
