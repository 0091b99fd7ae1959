"""Integrated Gradients, vectorised, with a fixed or an adaptive quadrature.

Integrated Gradients (Sundararajan et al. 2017) integrates the gradient along the straight
path from a baseline b to the input x: ``(x - b) * integral_0^1 grad f(b + a (x - b)) da``.

Captum computes the same integral row by row. Here every (row, step) pair of a batch is
one point of one flat list, evaluated in chunks whose size is chosen from the input size,
so a thousand tabular rows cost a few large passes instead of a thousand small ones. The
quadrature nodes are cached.

With ``n_steps="auto"`` the rule is adaptive composite Simpson. Each pass at a point of
the path gives both the gradient and the output F(alpha), so on every panel [a, b] the
exact integral of the path derivative is known, F(b) - F(a), and so is the panel's own
error. Panels with the largest errors are bisected (two new passes each) until the
completeness error ``|sum(attr) - (f(x) - f(b))|`` is at most ``tolerance`` times
``|f(x) - f(b)|``. The end points are the input and the baseline, so f(x) and f(b) come
free from the same passes.
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
from xai_sandbox.models.accelerator import Batcher, autocast
from xai_sandbox.models.adapters import model_errors

__all__ = ["IntegratedGradients", "auto_chunk", "gauss_legendre",
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


def auto_chunk(sample_numel: int, total: int) -> int:
    """Points per forward/backward pass past which a CPU gains nothing, for samples of
    ``sample_numel`` elements (the memory budget may allow fewer)."""
    return max(1, min(total, _CHUNK_ELEMENTS // max(1, sample_numel)))


@dataclass
class Passes:
    """How the points of a path are evaluated: ``batcher`` sizes the passes (unless
    ``internal_batch_size`` fixes them) from ``per_point`` bytes; ``precision`` is the
    autocast dtype of the forward and backward passes (``None``: float32)."""

    batcher: Batcher
    per_point: int
    internal_batch_size: int | None = None
    precision: torch.dtype | None = None

    def size(self, numel: int, total: int) -> int:
        return self.internal_batch_size or self.batcher.size(
            self.per_point, total, cpu_cap=auto_chunk(numel, total))


def _path_gradients(forward: Forward, x: torch.Tensor, b: torch.Tensor, target: torch.Tensor,
                    rows: torch.Tensor, alphas: torch.Tensor, passes: Passes,
                    weights: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of the target output at the points b[r] + alpha (x[r] - b[r]).

    ``rows`` and ``alphas`` list the points. With ``weights`` (one per point) returns the
    weighted sum of gradients per row, shape ``x.shape``; otherwise every gradient,
    shape ``(points, *x.shape[1:])``. Also returns the target output at every point.
    """
    shape = x.shape[1:]
    total = rows.shape[0]
    grads = (torch.zeros_like(x) if weights is not None
             else torch.empty((total, *shape), dtype=x.dtype, device=x.device))
    outputs = torch.empty(total, dtype=x.dtype, device=x.device)
    diff = x - b
    view = (-1,) + (1,) * len(shape)
    def step(start: int, stop: int) -> None:
        row = rows[start:stop]
        points = (b[row] + alphas[start:stop].view(view) * diff[row]).requires_grad_(True)
        with autocast(x.device, passes.precision):
            out = forward(points)
        picked = out.gather(1, target[row][:, None]).squeeze(1)
        if passes.precision is not None:
            picked = picked.float()
        (g,) = torch.autograd.grad(picked.sum(), points)
        g = g.to(x.dtype)
        outputs[start:stop] = picked.detach().to(x.dtype)
        if weights is not None:
            grads.index_add_(0, row, g * weights[start:stop].view(view))
        else:
            grads[start:stop] = g

    passes.batcher.run(total, passes.size(int(np.prod(shape)), total), step)
    return grads, outputs


@dataclass(frozen=True)
class IGResult:
    attributions: torch.Tensor
    delta: torch.Tensor
    f_input: torch.Tensor
    f_baseline: torch.Tensor
    passes: np.ndarray  # model evaluations (forward + backward) per row
    # Rows whose reduced-precision completeness error exceeded the tolerance and that
    # were computed again in float32.
    fallback_rows: tuple[int, ...] = ()


def integrated_gradients(forward: Forward, inputs: torch.Tensor, baselines: torch.Tensor,
                         target: torch.Tensor, *, n_steps: int | Literal["auto"] = 50,
                         tolerance: float = 0.01, max_steps: int = 256,
                         internal_batch_size: int | None = None,
                         passes: Passes | None = None) -> IGResult:
    """Integrated Gradients of ``forward``'s ``target`` outputs, for a whole batch.

    ``n_steps`` Gauss-Legendre points, or ``"auto"`` for adaptive Simpson panels
    until the completeness error is below ``tolerance`` (relative) or ``max_steps`` is hit.
    ``passes`` sizes the passes to a memory budget (default: the CPU budget, with a
    point costed at 16 times its input) and may set an autocast precision. With one, f(x)
    and f(b) are computed in float32, and the rows whose completeness error exceeds
    ``tolerance`` are integrated again in float32 (``IGResult.fallback_rows``).
    """
    if passes is None:
        numel = int(np.prod(inputs.shape[1:]))
        passes = Passes(Batcher.for_device(inputs.device),
                        16 * numel * inputs.element_size(), internal_batch_size)
    b = baselines.expand_as(inputs).to(inputs.dtype)
    n = inputs.shape[0]
    target = target.to(inputs.device)

    if n_steps != "auto":
        a_np, w_np = gauss_legendre(int(n_steps))
        alphas = torch.as_tensor(a_np, dtype=inputs.dtype, device=inputs.device)
        weights = torch.as_tensor(w_np, dtype=inputs.dtype, device=inputs.device)
        m = len(a_np)
        rows = torch.arange(n, device=inputs.device).repeat_interleave(m)
        total_grad, _ = _path_gradients(forward, inputs, b, target, rows, alphas.repeat(n),
                                        passes, weights.repeat(n))
        attributions = (inputs - b) * total_grad
        f_x, f_b = _ends(forward, inputs, b, target)
        counts = np.full(n, len(a_np), dtype=np.int64)
    else:
        attributions, f_x, f_b, counts = _adaptive(forward, inputs, b, target, tolerance,
                                                   max_steps, passes)
        if passes.precision is not None:
            f_x, f_b = _ends(forward, inputs, b, target)
    delta = attributions.reshape(n, -1).sum(dim=1) - (f_x - f_b)
    fallback: tuple[int, ...] = ()
    if passes.precision is not None:
        bad = (delta.abs() > tolerance * (f_x - f_b).abs().clamp_min(1e-12)).nonzero()
        fallback = tuple(int(r) for r in bad.flatten().tolist())
        if fallback:
            redo = torch.as_tensor(fallback, device=inputs.device)
            again = integrated_gradients(
                forward, inputs[redo], b[redo], target[redo], n_steps=n_steps,
                tolerance=tolerance, max_steps=max_steps,
                passes=Passes(passes.batcher, passes.per_point, passes.internal_batch_size))
            attributions, delta = attributions.clone(), delta.clone()
            attributions[redo], delta[redo] = again.attributions, again.delta
            counts = counts.copy()
            counts[list(fallback)] += again.passes
    return IGResult(attributions.detach(), delta.detach(), f_x, f_b, counts, fallback)


def _ends(forward: Forward, x: torch.Tensor, b: torch.Tensor, target: torch.Tensor
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """f(x) and f(b) of the target outputs, in the model's own precision."""
    n = x.shape[0]
    with torch.no_grad():
        both = forward(torch.cat([x, b]))
    ends = both.gather(1, torch.cat([target, target])[:, None]).squeeze(1).to(x.dtype)
    return ends[:n], ends[n:]


def _adaptive(forward: Forward, x: torch.Tensor, b: torch.Tensor, target: torch.Tensor,
              tolerance: float, max_steps: int, passes: Passes
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray]:
    """Adaptive composite Simpson for every row at once.

    Nodes (points on a row's path) and panels (node triples a, midpoint, b) of all rows
    live in flat arrays; each round evaluates the new nodes of all active rows in one
    batched call, computes every panel's error against F(b) - F(a), stops the rows whose
    completeness error is within tolerance, and bisects, per remaining row, the worst
    panels holding half of its absolute error (at most 8).
    """
    n = x.shape[0]
    diff = x - b
    flat_diff = diff.reshape(n, -1)
    # Round 0: nine equally spaced nodes (four panels) per row; node 9r is alpha 0 and
    # node 9r + 8 is alpha 1.
    new_rows = np.repeat(np.arange(n), 9)
    new_alphas = np.tile(np.linspace(0.0, 1.0, 9), n)
    first = 9 * np.arange(n)
    p_row = np.repeat(np.arange(n), 4)
    p_a = (first[:, None] + np.array([0, 2, 4, 6])).ravel()
    p_m, p_b = p_a + 1, p_a + 2
    rows = np.empty(0, dtype=np.int64)
    alphas = np.empty(0)
    outs = np.empty(0)
    slopes = np.empty(0)
    grads: list[torch.Tensor] = []
    active = np.ones(n, dtype=bool)
    while new_rows.size:
        r_t = torch.as_tensor(new_rows, device=x.device)
        a_t = torch.as_tensor(new_alphas, dtype=x.dtype, device=x.device)
        g, o = _path_gradients(forward, x, b, target, r_t, a_t, passes, None)
        grads.append(g)
        rows = np.concatenate([rows, new_rows])
        alphas = np.concatenate([alphas, new_alphas])
        outs = np.concatenate([outs, o.double().cpu().numpy()])
        slopes = np.concatenate([slopes, (g.reshape(len(new_rows), -1) * flat_diff[r_t])
                                 .sum(dim=1).double().cpu().numpy()])
        h = alphas[p_b] - alphas[p_a]
        err = h / 6.0 * (slopes[p_a] + 4.0 * slopes[p_m] + slopes[p_b]) - (outs[p_b] - outs[p_a])
        total = np.bincount(p_row, err, minlength=n)
        gap = outs[first + 8] - outs[first]
        count = np.bincount(rows, minlength=n)
        active &= (np.abs(total) > tolerance * np.maximum(np.abs(gap), 1e-12)) & (
            count + 2 <= max_steps)
        # Per active row: panels by decreasing |error|; split while the error already
        # covered is under half the row's absolute error, at most 8 and within budget.
        abs_err = np.abs(err)
        order = np.lexsort((-abs_err, p_row))
        sorted_rows = p_row[order]
        starts = np.searchsorted(sorted_rows, sorted_rows, side="left")
        rank = np.arange(order.size) - starts
        cum = np.cumsum(abs_err[order])
        before = cum - abs_err[order] - (cum[starts] - abs_err[order][starts])
        budget = np.minimum(8, (max_steps - count) // 2)
        half = 0.5 * np.bincount(p_row, abs_err, minlength=n)
        pick = active[sorted_rows] & (rank < budget[sorted_rows]) & (before < half[sorted_rows])
        split = order[pick]
        keep = np.ones(p_row.size, dtype=bool)
        keep[split] = False
        base = alphas.size + 2 * np.arange(split.size)
        left, right = base, base + 1
        new_rows = np.repeat(p_row[split], 2)
        new_alphas = np.stack([(alphas[p_a[split]] + alphas[p_m[split]]) / 2,
                               (alphas[p_m[split]] + alphas[p_b[split]]) / 2], axis=1).ravel()
        p_row = np.concatenate([p_row[keep], p_row[split], p_row[split]])
        p_a, p_m, p_b = (np.concatenate([p_a[keep], p_a[split], p_m[split]]),
                         np.concatenate([p_m[keep], left, right]),
                         np.concatenate([p_b[keep], p_m[split], p_b[split]]))
    # Composite Simpson weights per node, applied to the gradient vectors.
    h = alphas[p_b] - alphas[p_a]
    weights = np.zeros(alphas.size)
    np.add.at(weights, p_a, h / 6.0)
    np.add.at(weights, p_m, 4.0 * h / 6.0)
    np.add.at(weights, p_b, h / 6.0)
    stacked = torch.cat(grads)
    w = torch.as_tensor(weights, dtype=x.dtype, device=x.device)
    summed = torch.zeros_like(x).index_add_(
        0, torch.as_tensor(rows, device=x.device),
        stacked * w.view((-1,) + (1,) * (stacked.dim() - 1)))
    f_x = torch.as_tensor(outs[first + 8], dtype=x.dtype, device=x.device)
    f_b = torch.as_tensor(outs[first], dtype=x.dtype, device=x.device)
    return diff * summed, f_x, f_b, np.bincount(rows, minlength=n).astype(np.int64)


@register_explainer
class IntegratedGradients(Explainer):
    """Integrated Gradients with its convergence delta.

    Parameters
    ----------
    n_steps:
        ``"auto"`` (default): adaptive Simpson until the completeness error is at most
        ``tolerance``; or a number of Gauss-Legendre points (Captum's rule, which on ReLU
        networks can leave errors of several per cent at 50 points).
    tolerance:
        Relative completeness error at which ``"auto"`` stops, and above which a row
        computed with ``dtype=float16|bfloat16`` is computed again in float32 (only with
        ``"auto"`` or a ``dtype`` on tabular or image inputs; refused otherwise, since it
        would not be used).
    max_steps:
        Upper bound on the points of ``"auto"`` (the same condition).
    internal_batch_size:
        Points per pass; ``None`` picks it from the memory budget and what one point
        costs (measured once per model and input shape), halving a pass that runs out of
        memory.
    """

    name = "integrated_gradients"
    summary = "path integral of gradients from a baseline; completeness delta reported"
    requires = "gradients"
    reads = frozenset({"baselines"})
    autocasts = True

    def __init__(self, n_steps: int | Literal["auto"] = "auto", tolerance: float = 0.01,
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

    def unused(self, problem: Problem) -> dict[str, str]:
        tokens = problem.adapter.input_kind == "tokens"
        adaptive = self.n_steps == "auto" and not tokens
        why = ("only the adaptive rule (n_steps='auto' on tabular or image inputs) uses it; "
               "token inputs take 50 fixed points for 'auto'" if tokens else
               f"only the adaptive rule (n_steps='auto') uses it, not n_steps={self.n_steps!r}")
        guarded = problem.precision is not None and not tokens
        return {**super().unused(problem),
                **self._unless(adaptive or guarded, ("tolerance",), why
                               + ("" if tokens else ", or a dtype of float16/bfloat16")),
                **self._unless(adaptive, ("max_steps",), why)}

    def run(self, problem: Problem) -> Result:
        self._validate()
        problem.adapter.torch_module()  # refuses a module in training mode
        forward = problem.adapter.forward_tensor
        x = problem.tensor(problem.inputs)
        b = problem.tensor(problem.baselines)
        t = torch.as_tensor(problem.target)
        if problem.adapter.input_kind == "tokens":
            return self._tokens(problem, x, b, t)
        passes = Passes(problem.batcher, problem.point_bytes(), self.internal_batch_size,
                        problem.precision)
        with model_errors(problem.inputs.shape):
            res = integrated_gradients(forward, x, b, t, n_steps=self.n_steps,
                                       tolerance=self.tolerance, max_steps=self.max_steps,
                                       passes=passes)
        extra: dict[str, object] = {
            "method_rule": "gauss_legendre" if self.n_steps != "auto" else "adaptive_simpson",
            "passes_per_row": ([int(p) for p in res.passes]
                               if self.n_steps == "auto" or res.fallback_rows
                               else int(res.passes[0]))}
        if problem.precision is not None:
            extra["precision_fallback_rows"] = list(res.fallback_rows)
        return Result(values=res.attributions.double().cpu().numpy(),
                      expected_value=res.f_baseline.double().cpu().numpy(),
                      delta=res.delta.double().cpu().numpy(),
                      baseline=problem.baselines, output_space=problem.adapter.output_space,
                      extra=extra)

    def _tokens(self, problem: Problem, x: torch.Tensor, b: torch.Tensor,
                t: torch.Tensor) -> Result:
        """Token ids: layer IG on the embedding output (Captum), summed per token."""
        from captum.attr import LayerIntegratedGradients

        if problem.precision is not None:
            raise InvalidInputError("dtype", "token ids are integrated by Captum's "
                                    "LayerIntegratedGradients in float32; mixed precision "
                                    "is for tabular and image inputs here (text models: "
                                    "xai_sandbox.text)", str(problem.precision))
        # Interpolating embeddings has no adaptive rule here: "auto" means 50 points.
        steps = 50 if self.n_steps == "auto" else int(self.n_steps)
        emb = problem.adapter.embedding_module()  # type: ignore[attr-defined]
        lig = LayerIntegratedGradients(problem.adapter.forward_tensor, emb)
        size = self.internal_batch_size or problem.batcher.size(
            problem.point_bytes(), problem.n * steps,
            cpu_cap=auto_chunk(int(np.prod(x.shape[1:])) * 64, problem.n * steps))
        with model_errors(problem.inputs.shape):
            attr, delta = problem.batcher.call(size, lambda s: lig.attribute(
                x, baselines=b.expand_as(x), target=t.to(x.device), n_steps=steps,
                internal_batch_size=s, return_convergence_delta=True))
            with torch.no_grad():
                f_b = problem.adapter.forward_tensor(b.expand_as(x))
        rows = torch.arange(problem.n, device=f_b.device)
        return Result(values=attr.detach().sum(dim=-1).double().cpu().numpy(),
                      expected_value=f_b[rows, t.to(f_b.device)].double().cpu().numpy(),
                      delta=delta.detach().double().cpu().numpy(), baseline=problem.baselines,
                      output_space=problem.adapter.output_space,
                      extra={"method_rule": "gauss_legendre", "passes_per_row": steps,
                             "layer": "embedding"})

