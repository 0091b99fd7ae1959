"""Integrated Gradients, vectorised, with a fixed or an adaptive quadrature.

Integrated Gradients (Sundararajan et al. 2017) integrates the gradient along the straight
path from a baseline b to the input x: ``(x - b) * integral_0^1 grad f(b + a (x - b)) da``.

Captum computes the same integral row by row. Here every (row, step) pair of a batch is
one point of one flat list, evaluated in chunks whose size is chosen from the input size,
so a thousand tabular rows cost a few large passes instead of a thousand small ones. The
quadrature nodes are cached. With ``n_steps="auto"`` the rule is nested Clenshaw-Curtis:
9, 17, 33, ... points, each level reusing the gradients of the last, stopping per row as
soon as the completeness error ``|sum(attr) - (f(x) - f(b))|`` falls below ``tolerance``
times ``|f(x) - f(b)|``. Its end points are the input and the baseline, so f(x) and f(b)
come free from the same passes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from xai_sandbox.errors import InvalidInputError
from xai_sandbox.explainers.base import Explainer, Problem, Result, register_explainer
from xai_sandbox.models.adapters import model_errors

__all__ = ["IntegratedGradients", "auto_chunk", "clenshaw_curtis", "gauss_legendre",
           "integrated_gradients"]

Forward = Callable[[torch.Tensor], torch.Tensor]
# Elements of input per chunk: about 4 MB of float32 input, which keeps activations of
# image CNNs in the range where this CPU's allocator does not return memory to the system.
_CHUNK_ELEMENTS = 1 << 20


@functools.lru_cache(maxsize=64)
def gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights on [0, 1] (Captum's default rule)."""
    x, w = np.polynomial.legendre.leggauss(n)
    return 0.5 * (1.0 + x), 0.5 * w


@functools.lru_cache(maxsize=16)
def clenshaw_curtis(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Clenshaw-Curtis nodes (ascending, end points included) and weights on [0, 1].

    ``n`` must be even; the n + 1 nodes of level n are among those of level 2n.
    """
    k = np.arange(n + 1)
    theta = np.pi * k / n
    w = np.ones(n + 1)
    for j in range(1, n // 2 + 1):
        b = 1.0 if 2 * j == n else 2.0
        w -= b * np.cos(2 * j * theta) / (4 * j * j - 1)
    c = np.where((k == 0) | (k == n), 1.0, 2.0)
    return (1.0 - np.cos(theta)) / 2.0, 0.5 * c * w / n


def auto_chunk(sample_numel: int, total: int) -> int:
    """Points per forward/backward pass for samples of ``sample_numel`` elements."""
    return max(1, min(total, _CHUNK_ELEMENTS // max(1, sample_numel)))


def _path_gradients(forward: Forward, x: torch.Tensor, b: torch.Tensor, target: torch.Tensor,
                    alphas: torch.Tensor, chunk: int,
                    weights: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of the target output at b + alpha (x - b) for every row and alpha.

    With ``weights`` returns the weighted sum over alphas per row, shape ``x.shape``;
    otherwise every gradient, shape ``(n, m, *x.shape[1:])``. Also returns the target
    outputs at every point, shape ``(n, m)``.
    """
    n, m = x.shape[0], alphas.shape[0]
    shape = x.shape[1:]
    total = n * m
    grads = (torch.zeros_like(x) if weights is not None
             else torch.empty((n * m, *shape), dtype=x.dtype, device=x.device))
    outputs = torch.empty(n * m, dtype=x.dtype, device=x.device)
    diff = x - b
    view = (-1,) + (1,) * len(shape)
    for start in range(0, total, chunk):
        idx = torch.arange(start, min(start + chunk, total), device=x.device)
        row, step = idx // m, idx % m
        points = (b[row] + alphas[step].view(view) * diff[row]).requires_grad_(True)
        out = forward(points)
        picked = out.gather(1, target[row][:, None]).squeeze(1)
        (g,) = torch.autograd.grad(picked.sum(), points)
        outputs[idx] = picked.detach()
        if weights is not None:
            grads.index_add_(0, row, g * weights[step].view(view))
        else:
            grads[idx] = g
    if weights is None:
        return grads.view(n, m, *shape), outputs.view(n, m)
    return grads, outputs.view(n, m)


@dataclass(frozen=True)
class IGResult:
    attributions: torch.Tensor
    delta: torch.Tensor
    f_input: torch.Tensor
    f_baseline: torch.Tensor
    passes: np.ndarray  # model evaluations (forward + backward) per row


def integrated_gradients(forward: Forward, inputs: torch.Tensor, baselines: torch.Tensor,
                         target: torch.Tensor, *, n_steps: int | Literal["auto"] = 50,
                         tolerance: float = 0.01, max_steps: int = 256,
                         internal_batch_size: int | None = None) -> IGResult:
    """Integrated Gradients of ``forward``'s ``target`` outputs, for a whole batch.

    ``n_steps`` Gauss-Legendre points, or ``"auto"`` for nested Clenshaw-Curtis levels
    until the completeness error is below ``tolerance`` (relative) or ``max_steps`` is hit.
    """
    b = baselines.expand_as(inputs).to(inputs.dtype)
    n = inputs.shape[0]
    numel = int(np.prod(inputs.shape[1:]))
    target = target.to(inputs.device)

    if n_steps != "auto":
        a_np, w_np = gauss_legendre(int(n_steps))
        alphas = torch.as_tensor(a_np, dtype=inputs.dtype, device=inputs.device)
        weights = torch.as_tensor(w_np, dtype=inputs.dtype, device=inputs.device)
        chunk = internal_batch_size or auto_chunk(numel, n * len(a_np))
        total_grad, _ = _path_gradients(forward, inputs, b, target, alphas, chunk, weights)
        attributions = (inputs - b) * total_grad
        with torch.no_grad():
            both = forward(torch.cat([inputs, b]))
        ends = both.gather(1, torch.cat([target, target])[:, None]).squeeze(1)
        f_x, f_b = ends[:n], ends[n:]
        passes = np.full(n, len(a_np), dtype=np.int64)
    else:
        attributions, f_x, f_b, passes = _adaptive(forward, inputs, b, target, tolerance,
                                                   max_steps, internal_batch_size)
    delta = attributions.reshape(n, -1).sum(dim=1) - (f_x - f_b)
    return IGResult(attributions.detach(), delta.detach(), f_x, f_b, passes)


def _adaptive(forward: Forward, x: torch.Tensor, b: torch.Tensor, target: torch.Tensor,
              tolerance: float, max_steps: int, internal_batch_size: int | None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray]:
    n = x.shape[0]
    numel = int(np.prod(x.shape[1:]))
    level = 8
    nodes, _ = clenshaw_curtis(level)
    active = torch.arange(n, device=x.device)
    grads: torch.Tensor | None = None      # (n_active, points so far, *shape), node order
    outs: torch.Tensor | None = None
    have = np.empty(0)
    attributions = torch.zeros_like(x)
    f_x = torch.zeros(n, dtype=x.dtype, device=x.device)
    f_b = torch.zeros(n, dtype=x.dtype, device=x.device)
    passes = np.zeros(n, dtype=np.int64)
    while True:
        nodes, w = clenshaw_curtis(level)
        new = nodes if grads is None else nodes[1::2]
        alphas = torch.as_tensor(new, dtype=x.dtype, device=x.device)
        chunk = internal_batch_size or auto_chunk(numel, len(active) * len(new))
        g_new, o_new = _path_gradients(forward, x[active], b[active], target[active], alphas,
                                       chunk, None)
        if grads is None or outs is None:
            grads, outs = g_new, o_new
        else:
            grads = torch.cat([grads, g_new], dim=1)
            outs = torch.cat([outs, o_new], dim=1)
        have = new if have.size == 0 else np.concatenate([have, new])
        order = torch.as_tensor(np.argsort(have, kind="stable"), device=x.device)
        wt = torch.as_tensor(w, dtype=x.dtype, device=x.device)
        view = (1, -1) + (1,) * (x.dim() - 1)
        summed = (grads[:, order] * wt.view(view)).sum(dim=1)
        attr = (x[active] - b[active]) * summed
        fx, fb = outs[:, order[-1]], outs[:, order[0]]
        gap = fx - fb
        err = (attr.reshape(len(active), -1).sum(dim=1) - gap).abs()
        done = (err <= tolerance * gap.abs().clamp_min(1e-12)) | (level * 2 > max_steps)
        passes[active.cpu().numpy()] = len(have)
        idx = active[done]
        attributions[idx], f_x[idx], f_b[idx] = attr[done], fx[done], fb[done]
        if bool(done.all()):
            return attributions, f_x, f_b, passes
        keep = ~done
        active, grads, outs = active[keep], grads[keep], outs[keep]
        level *= 2


@register_explainer
class IntegratedGradients(Explainer):
    """Integrated Gradients with its convergence delta.

    Parameters
    ----------
    n_steps:
        Gauss-Legendre points (Captum's default rule), or ``"auto"`` for the adaptive
        nested Clenshaw-Curtis rule that stops at ``tolerance``.
    tolerance:
        Relative completeness error at which ``"auto"`` stops.
    max_steps:
        Upper bound on the points of ``"auto"``.
    internal_batch_size:
        Points per pass; ``None`` picks it from the input size.
    """

    name = "integrated_gradients"
    summary = "path integral of gradients from a baseline; completeness delta reported"
    requires = "gradients"
    def __init__(self, n_steps: int | Literal["auto"] = 50, tolerance: float = 0.01,
                 max_steps: int = 256, internal_batch_size: int | None = None) -> None:
        self.n_steps = n_steps
        self.tolerance = tolerance
        self.max_steps = max_steps
        self.internal_batch_size = internal_batch_size

    def _validate(self) -> None:
        if self.n_steps != "auto" and (not isinstance(self.n_steps, int)
                                       or isinstance(self.n_steps, bool) or self.n_steps < 1):
            raise InvalidInputError("n_steps", "must be a positive integer or 'auto'",
                                    self.n_steps)
        if not isinstance(self.tolerance, int | float) or not 0 < self.tolerance < 1:
            raise InvalidInputError("tolerance", "must be a number in (0, 1)", self.tolerance)
        if not isinstance(self.max_steps, int) or self.max_steps < 8:
            raise InvalidInputError("max_steps", "must be an integer >= 8", self.max_steps)
        if self.internal_batch_size is not None and (
                not isinstance(self.internal_batch_size, int) or self.internal_batch_size < 1):
            raise InvalidInputError("internal_batch_size", "must be a positive integer or None",
                                    self.internal_batch_size)

    def run(self, problem: Problem) -> Result:
        self._validate()
        module = problem.adapter.torch_module()
        del module
        forward = problem.adapter.forward_tensor
        x = problem.tensor(problem.inputs)
        b = problem.tensor(problem.baselines)
        t = torch.as_tensor(problem.target)
        if problem.adapter.input_kind == "tokens":
            return self._tokens(problem, x, b, t)
        with model_errors(problem.inputs.shape):
            res = integrated_gradients(forward, x, b, t, n_steps=self.n_steps,
                                       tolerance=self.tolerance, max_steps=self.max_steps,
                                       internal_batch_size=self.internal_batch_size)
        extra = {"method_rule": "gauss_legendre" if self.n_steps != "auto"
                 else "clenshaw_curtis_adaptive",
                 "passes_per_row": ([int(p) for p in res.passes] if self.n_steps == "auto"
                                    else int(res.passes[0]))}
        return Result(values=res.attributions.double().cpu().numpy(),
                      expected_value=res.f_baseline.double().cpu().numpy(),
                      delta=res.delta.double().cpu().numpy(),
                      baseline=problem.baselines, extra=extra)

    def _tokens(self, problem: Problem, x: torch.Tensor, b: torch.Tensor,
                t: torch.Tensor) -> Result:
        """Token ids: layer IG on the embedding output (Captum), summed per token."""
        from captum.attr import LayerIntegratedGradients

        if self.n_steps == "auto":
            raise InvalidInputError("n_steps", "token models take a fixed number of steps",
                                    self.n_steps)
        emb = problem.adapter.embedding_module()  # type: ignore[attr-defined]
        lig = LayerIntegratedGradients(problem.adapter.forward_tensor, emb)
        with model_errors(problem.inputs.shape):
            attr, delta = lig.attribute(x, baselines=b.expand_as(x), target=t,
                                        n_steps=int(self.n_steps),
                                        internal_batch_size=self.internal_batch_size,
                                        return_convergence_delta=True)
            with torch.no_grad():
                f_b = problem.adapter.forward_tensor(b.expand_as(x))
        rows = torch.arange(problem.n)
        return Result(values=attr.detach().sum(dim=-1).double().cpu().numpy(),
                      expected_value=f_b[rows, t].double().cpu().numpy(),
                      delta=delta.detach().double().cpu().numpy(), baseline=problem.baselines,
                      extra={"method_rule": "gauss_legendre", "layer": "embedding"})

