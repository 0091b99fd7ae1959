"""Perturbation methods through Captum: Occlusion (feature ablation) and LIME.

They need no gradients, so they run on every adapter: torch modules and scikit-learn,
LightGBM or XGBoost estimators alike. On tabular data with a schema, the columns of one
feature are switched together, so each feature gets one value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import numpy as np
import torch
from captum._utils.models.linear_model import SkLearnLasso
from captum.attr import FeatureAblation, Lime, Occlusion
from captum.attr._core.lime import get_exp_kernel_similarity_function
from torch.utils.data import DataLoader

from xai_sandbox.errors import InvalidInputError
from xai_sandbox.explainers.base import Explainer, Problem, Result, register_explainer
from xai_sandbox.models.adapters import model_errors

__all__ = ["LimeExplainer", "OcclusionExplainer", "bernoulli_perturbations", "feature_mask"]


def feature_mask(problem: Problem, patch: int) -> tuple[torch.Tensor, tuple[str, ...] | None]:
    """Integer mask of one sample's shape: players for tabular data, square patches
    (shared across channels) for images."""
    shape = problem.inputs.shape[1:]
    if problem.adapter.input_kind == "image":
        if len(shape) != 3:
            raise InvalidInputError("inputs", "images must be (n, channels, height, width)",
                                    problem.inputs.shape)
        _, h, w = shape
        cols = -(-w // patch)
        rows = torch.arange(h)[:, None] // patch
        ids = rows * cols + torch.arange(w)[None, :] // patch
        return ids.expand(shape).clone()[None], None
    players, names = problem.players()
    mask = torch.empty(int(np.prod(shape)), dtype=torch.long)
    for k, cols_ in enumerate(players):
        mask[list(cols_)] = k
    return mask.reshape(shape)[None], names


def bernoulli_perturbations(generator: torch.Generator) -> Callable[..., torch.Tensor]:
    """Captum LIME's default sampling (each interpretable feature on with probability 1/2),
    drawn from ``generator`` instead of torch's global generator."""

    def perturb(original_inp: torch.Tensor | tuple[torch.Tensor, ...],
                **kwargs: object) -> torch.Tensor:
        first = original_inp if isinstance(original_inp, torch.Tensor) else original_inp[0]
        probs = torch.full((1, cast(int, kwargs["num_interp_features"])), 0.5)
        return torch.bernoulli(probs, generator=generator).to(device=first.device).long()

    return perturb


class _LassoSurrogate(SkLearnLasso):  # type: ignore[misc]  # captum ships no types here
    """Captum's Lasso surrogate, fitted without touching torch's global generator.

    Captum hands the samples over in a ``DataLoader`` without a generator, whose iterator
    draws a base seed from the global generator: the loader is rebuilt on ``generator``.
    It then builds an ``nn.Linear``, which draws initial weights from the global
    generator, and overwrites them with the fitted coefficients: the layer is built
    uninitialised instead. ``kwargs`` go to scikit-learn's ``Lasso``.
    """

    def __init__(self, generator: torch.Generator, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._generator = generator

    def fit(self, train_data: DataLoader[Any], **kwargs: Any) -> Any:
        loader = DataLoader(train_data.dataset, batch_size=train_data.batch_size,
                            generator=self._generator)
        return super().fit(loader, **kwargs)

    def _construct_model_params(self, in_features: int | None = None,
                                out_features: int | None = None,
                                norm_type: str | None = None, affine_norm: bool = False,
                                bias: bool = True, weight_values: torch.Tensor | None = None,
                                bias_value: torch.Tensor | None = None,
                                classes: torch.Tensor | None = None) -> None:
        if norm_type is not None or weight_values is None:  # not the sklearn path
            super()._construct_model_params(in_features, out_features, norm_type,
                                            affine_norm, bias, weight_values, bias_value,
                                            classes)
            return
        shape = (1, weight_values.shape[-1]) if weight_values.ndim == 1 else weight_values.shape
        self.norm = None
        self.linear = torch.nn.utils.skip_init(  # type: ignore[no-untyped-call]
            torch.nn.Linear, shape[1], shape[0], bias=bias, device=weight_values.device)
        self.linear.weight.data = weight_values
        if bias_value is not None:
            self.linear.bias.data = bias_value
        if classes is not None:
            self.linear.classes = classes


def _positive_int(value: object, name: str, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise InvalidInputError(name, f"must be an integer >= {minimum}", value)
    return value


@register_explainer
class OcclusionExplainer(Explainer):
    """Occlusion: the output change when a patch (image) or a feature (tabular) is
    replaced by the baseline. Captum's ``Occlusion`` for images, ``FeatureAblation`` for
    tabular features."""

    name = "occlusion"
    summary = "output drop when a patch or feature is replaced by the baseline"
    input_kinds = ("tabular", "image")
    reads = frozenset({"baselines"})

    def __init__(self, window: int = 16, stride: int | None = None) -> None:
        self.window = window
        self.stride = stride

    def unused(self, problem: Problem) -> dict[str, str]:
        return {**super().unused(problem), **self._unless(
            problem.adapter.input_kind == "image", ("window", "stride"),
            "only images are occluded by sliding windows; tabular features are replaced "
            "one whole feature at a time")}

    def run(self, problem: Problem) -> Result:
        window = _positive_int(self.window, "window")
        stride = _positive_int(self.stride if self.stride is not None else window, "stride")
        x = problem.tensor(problem.inputs)
        b = problem.tensor(problem.baseline_rows())
        target = torch.as_tensor(problem.target)
        forward = problem.adapter.forward_tensor
        # Perturbations per pass (each one a copy of the batch) within the memory budget.
        rows_per_pass = problem.batcher.size(problem.point_bytes() * problem.n, 1 << 16,
                                             cpu_cap=max(1, (1 << 22) // x.numel()))
        with model_errors(problem.inputs.shape), torch.no_grad():
            if problem.adapter.input_kind == "image":
                c = x.shape[1]
                attr = problem.batcher.call(rows_per_pass, lambda per: Occlusion(
                    forward).attribute(x, sliding_window_shapes=(c, window, window),
                                       strides=(c, stride, stride), baselines=b,
                                       target=target.to(x.device), perturbations_per_eval=per))
                return Result(values=attr.double().cpu().numpy(), baseline=problem.baselines,
                              output_space=problem.adapter.output_space)
            mask, names = feature_mask(problem, window)
            attr = problem.batcher.call(rows_per_pass, lambda per: FeatureAblation(
                forward).attribute(x, baselines=b, target=target.to(x.device),
                                   feature_mask=mask.to(x.device), perturbations_per_eval=per))
        values = attr.double().cpu().numpy()
        if problem.groups is not None:
            # Each column of a group carries the group's value: keep one per group.
            values = values[:, [g[0] for g in problem.groups]]
        return Result(values=values, baseline=problem.baselines, feature_names=names,
                      output_space=problem.adapter.output_space)


@register_explainer
class LimeExplainer(Explainer):
    """LIME (Ribeiro et al. 2016) through Captum: a sparse linear surrogate fitted to
    random on/off perturbations of features (tabular) or square patches (images). The
    perturbations come from the problem's ``torch_generator`` (Captum's default sampler
    would draw from torch's global one) and the Lasso's seed from its ``rng``; the
    surrogate is fitted without touching torch's global generator either.

    Parameters
    ----------
    n_samples:
        Perturbations per input.
    alpha:
        Lasso penalty of the surrogate.
    kernel_width:
        Width of the exponential similarity kernel (cosine distance).
    patch:
        Side of the square image patches in pixels (images only; refused on tabular data,
        whose features are switched one at a time).
    """

    name = "lime"
    summary = "local sparse linear surrogate fitted to random perturbations (Captum Lime)"
    input_kinds = ("tabular", "image")
    reads = frozenset({"baselines"})
    samples = True

    def __init__(self, n_samples: int = 1000, alpha: float = 0.01, kernel_width: float = 1.0,
                 patch: int = 32) -> None:
        self.n_samples = n_samples
        self.alpha = alpha
        self.kernel_width = kernel_width
        self.patch = patch

    def unused(self, problem: Problem) -> dict[str, str]:
        return {**super().unused(problem), **self._unless(
            problem.adapter.input_kind == "image", ("patch",),
            "only images are split into patches; tabular features are switched one at a "
            "time")}

    def run(self, problem: Problem) -> Result:
        n_samples = _positive_int(self.n_samples, "n_samples", 10)
        patch = _positive_int(self.patch, "patch")
        for name in ("alpha", "kernel_width"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or v <= 0:
                raise InvalidInputError(name, "must be a positive number", v)
        mask, names = feature_mask(problem, patch)
        lime = Lime(problem.adapter.forward_tensor,
                    # sklearn's coordinate descent draws a seed even when it cycles;
                    # without one it takes it from numpy's global generator.
                    interpretable_model=_LassoSurrogate(
                        problem.torch_generator, alpha=float(self.alpha),
                        random_state=int(problem.rng.integers(2**31))),
                    similarity_func=get_exp_kernel_similarity_function(
                        "cosine", float(self.kernel_width)),
                    perturb_func=bernoulli_perturbations(problem.torch_generator))
        image = problem.adapter.input_kind == "image"
        rows = []
        b_rows = problem.baseline_rows()
        with model_errors(problem.inputs.shape):
            for i in range(problem.n):
                attr = lime.attribute(
                    problem.tensor(problem.inputs[i : i + 1]),
                    baselines=problem.tensor(b_rows[i : i + 1]),
                    target=int(problem.target[i]), feature_mask=mask,
                    n_samples=n_samples, return_input_shape=image, show_progress=False)
                rows.append(attr.detach().double().cpu().numpy()[0])
        return Result(values=np.stack(rows), baseline=problem.baselines, feature_names=names,
                      output_space=problem.adapter.output_space)
