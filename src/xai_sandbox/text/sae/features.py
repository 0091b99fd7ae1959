"""Feature attributions through the splice, checked by ablation, and the splice's fidelity."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from xai_sandbox.errors import InvalidInputError, InvalidTargetError, UnsupportedModelError
from xai_sandbox.explainers.explanation import Explanation
from xai_sandbox.text import checks
from xai_sandbox.text.model import TextModel, text_explanation
from xai_sandbox.text.sae.coder import (
    POSITIONS,
    Positions,
    Site,
    SparseCoder,
    as_coder,
    check_site,
)
from xai_sandbox.text.sae.splice import (
    Splice,
    ablation_mask,
    at_site,
    position_mask,
    spliced,
)

__all__ = [
    "AblationResult",
    "SpliceFidelity",
    "ablate_features",
    "feature_attribution",
    "splice_fidelity",
]


# ---------------------------------------------------------------------------- metrics
def _targets(model: TextModel, logits: torch.Tensor, mask: torch.Tensor, target: Any
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """The explained outputs ``(n, K)`` (class logits, or the last position's next-token
    logits of a causal LM) and one target index per row."""
    out = logits
    if model.kind == "causal_lm":
        last = mask.sum(dim=1) - 1
        out = logits[torch.arange(logits.shape[0], device=logits.device), last]
    n, width = out.shape
    if target is None:
        return out, out.argmax(dim=1)
    values = np.atleast_1d(np.asarray(target))
    if values.dtype.kind not in "iu" or values.ndim != 1 or len(values) not in (1, n):
        raise InvalidTargetError("target", f"must be an output index or one per row ({n})",
                                 target)
    if values.min() < 0 or values.max() >= width:
        raise InvalidTargetError("target", f"must be in [0, {width})", target)
    index = torch.as_tensor(np.broadcast_to(values, (n,)).copy(), device=out.device)
    return out, index


def _metric(out: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return out.gather(1, index[:, None]).squeeze(1)


def _attribution_pass(model: TextModel, coder: SparseCoder, enc: Any, layer: int, site: str,
                      positions: Positions, target: Any, scale: float
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                 torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """One forward and backward through the splice at ``feature_scale=scale``: outputs,
    target indices, metric, the (scaled) features and the error, and their gradients."""
    with spliced(model, coder, layer, site, positions=positions,  # type: ignore[arg-type]
                 attention_mask=enc.attention_mask, feature_scale=scale) as record:
        logits = model.forward(enc.input_ids, enc.attention_mask).logits
    out, index = _targets(model, logits, enc.attention_mask, target)
    metric = _metric(out, index)
    if record.features is None or record.error is None:
        raise UnsupportedModelError("model", "the site did not run in the forward", site)
    grad_f, grad_e = torch.autograd.grad(metric.sum(), [record.features, record.error],
                                         allow_unused=True)
    return (out.detach(), index, metric.detach(), record.features.detach(),
            record.error.detach(), grad_f, grad_e)


def feature_attribution(model: TextModel, sae: SparseCoder, texts: str | Sequence[str], *,
                        layer: int, target: int | Sequence[int] | None = None,
                        site: Site = "resid_post", positions: Positions = "all",
                        steps: int = 1, top_k: int = 5) -> Explanation:
    """Attribute a target logit to SAE features through the splice.

    The SAE is spliced in with its error term (the output is the model's own). With
    ``steps=1`` each feature's attribution at each token is gradient x activation,
    ``f * d(logit)/df`` (attribution patching). With ``steps > 1`` it is integrated
    gradients along ``alpha * f`` for ``alpha`` from 0 to 1 with the error term held
    (midpoint rule): ``f * mean_alpha d(logit)/df (alpha f)``, which sums to
    ``logit - logit(all features zeroed)`` up to the quadrature error. Use it where the
    model saturates (a tanh pooler, a confident softmax): there the gradient at ``alpha=1``
    is near zero and gradient x activation says little. ``values`` sums over the tokens.

    ``expected_value`` is the logit with every feature of the splice zeroed (error kept) and
    ``delta`` is ``sum(values) - (logit - expected_value)``. The error term's own gradient x
    activation is ``parameters["error_attribution"]``: a large one says the SAE misses what
    matters. ``parameters["token_attribution"]`` sums the features' attributions at each
    token (one list per row), a token map of where the attributed features sit.

    Parameters
    ----------
    model, sae, texts:
        The model, a :class:`SparseCoder` for the site, and the texts.
    layer, site, positions:
        Where the SAE is spliced (see :func:`spliced`).
    target:
        Class index (classifier) or next-token id at the last position (causal LM), one for
        all rows or one per row; ``None`` explains the predicted one.
    steps:
        ``1`` for gradient x activation, more for integrated gradients.
    top_k:
        Features listed per token in ``parameters["token_features"]`` (by activation) and
        per row in ``parameters["top_features"]`` (by attribution).

    Returns
    -------
    Explanation
        Method ``"sae_features"``, ``values`` ``(n, n_features)``, ``feature_names``
        ``feature_<j>``, ``prediction`` the explained outputs ``(n, K)``.
    """
    batch = checks.texts("texts", texts, single=True)
    coder = as_coder(sae)
    check_site(model, coder, layer, site)
    checks.choice("positions", positions, POSITIONS)
    steps = checks.integer("steps", steps, 1)
    top_k = checks.integer("top_k", top_k, 1)
    started = time.perf_counter()
    enc = model.encode(batch)
    out, index, metric, f, err, grad_f, grad_e = _attribution_pass(
        model, coder, enc, layer, site, positions, target, 1.0)
    err_attr = (err * grad_e).sum(-1) if grad_e is not None else (
        torch.zeros(f.shape[:2], dtype=f.dtype))
    fixed = index.cpu().numpy()               # the later passes explain the same outputs
    if steps == 1:
        mean_grad = grad_f if grad_f is not None else torch.zeros_like(f)
    else:
        mean_grad = torch.zeros_like(f)
        for i in range(steps):
            *_, g, _ = _attribution_pass(model, coder, enc, layer, site, positions, fixed,
                                         (i + 0.5) / steps)
            if g is not None:
                mean_grad += g / steps
    with torch.no_grad(), spliced(model, coder, layer, site, positions=positions,
                                  attention_mask=enc.attention_mask, feature_scale=0.0):
        zeroed, _ = _targets(model, model.logits(enc.input_ids, enc.attention_mask),
                             enc.attention_mask, fixed)
    base = _metric(zeroed, index).double().cpu().numpy()
    pad = enc.attention_mask.to(f.device, f.dtype)
    per_token = f * mean_grad * pad[..., None]
    values = per_token.sum(dim=1).double().cpu().numpy()
    metric_np = metric.double().cpu().numpy()

    token_totals = per_token.sum(dim=-1).double().cpu().numpy()
    tokens, token_features, top_features, token_attribution = [], [], [], []
    for row in range(len(batch)):
        length = int(enc.attention_mask[row].sum())
        tokens.append(enc.tokens(model, row))
        token_attribution.append(token_totals[row, :length].tolist())
        listing = []
        for t in range(length):
            acts = f[row, t]
            kk = min(top_k, int((acts > 0).sum()))
            order = torch.topk(acts, kk).indices.tolist() if kk else []
            listing.append([{"feature": int(j), "activation": float(acts[j]),
                             "attribution": float(per_token[row, t, j])} for j in order])
        token_features.append(listing)
        ranked = np.argsort(-np.abs(values[row]), kind="stable")[:top_k]
        top_features.append([{"feature": int(j), "attribution": float(values[row, j])}
                             for j in ranked])
    params = {"layer": int(layer), "site": site, "positions": positions,
              "n_features": coder.n_features, "top_k": top_k, "steps": steps,
              "rule": "gradient_x_activation" if steps == 1 else "integrated_gradients",
              "error_attribution": (err_attr * pad).sum(1).double().cpu().tolist(),
              "token_attribution": token_attribution, "token_features": token_features,
              "top_features": top_features}
    explanation = text_explanation(
        model, "sae_features", values, target=fixed,
        prediction=out.double().cpu().numpy(), output_space="logit",
        parameters=params, wall_time_s=time.perf_counter() - started, tokens=tokens,
        expected_value=base, delta=values.sum(axis=1) - (metric_np - base))
    names = tuple(f"feature_{j}" for j in range(coder.n_features))
    return dataclasses.replace(explanation, feature_names=names)


@dataclass(frozen=True)
class AblationResult:
    """The target logit before and after zero-ablating features (error term kept).

    ``change = ablated - base`` per row; ``mass`` is the ablated features' summed
    activation per row (to compare ablations of matched size); ``base_class`` and
    ``ablated_class`` are the argmax outputs.
    """

    features: Any
    target: np.ndarray
    base: np.ndarray
    ablated: np.ndarray
    change: np.ndarray
    mass: np.ndarray
    base_class: np.ndarray
    ablated_class: np.ndarray

    @property
    def mean_change(self) -> float:
        return float(np.mean(self.change))

    def to_dict(self) -> dict[str, Any]:
        feats = self.features
        if isinstance(feats, np.ndarray | torch.Tensor):
            feats = np.asarray(feats).tolist()
        else:
            feats = [list(map(int, f)) if isinstance(f, Sequence | np.ndarray) else int(f)
                     for f in feats]
        return {"features": feats, "target": self.target.tolist(), "base": self.base.tolist(),
                "ablated": self.ablated.tolist(), "change": self.change.tolist(),
                "mean_change": self.mean_change, "mass": self.mass.tolist(),
                "base_class": self.base_class.tolist(),
                "ablated_class": self.ablated_class.tolist()}


def ablate_features(model: TextModel, sae: SparseCoder, texts: str | Sequence[str],
                    features: Any, *, layer: int, target: int | Sequence[int] | None = None,
                    site: Site = "resid_post", positions: Positions = "all"
                    ) -> AblationResult:
    """Zero-ablate SAE features and measure the change of the target logit.

    The activation becomes ``decode(f with the features zeroed) + (a - x_hat)``: only the
    ablated features' contribution is removed, the SAE's error stays. ``features`` are
    indices for every row, one list per row, or a boolean mask (see :func:`spliced`).
    ``target=None`` uses the unablated prediction.
    """
    batch = checks.texts("texts", texts, single=True)
    coder = as_coder(sae)
    check_site(model, coder, layer, site)
    checks.choice("positions", positions, POSITIONS)
    keep = ablation_mask(features, coder.n_features)
    if keep is None:
        raise InvalidInputError("features", "must name at least one feature", features)
    if keep.ndim == 3 and keep.shape[0] != len(batch):
        raise InvalidInputError("features", f"needs one list per text ({len(batch)})",
                                keep.shape[0])
    enc = model.encode(batch)
    with torch.no_grad():
        base_out, index = _targets(model, model.logits(enc.input_ids, enc.attention_mask),
                                   enc.attention_mask, target)
        with spliced(model, coder, layer, site, ablate=features, positions=positions,
                     attention_mask=enc.attention_mask) as record:
            logits = model.logits(enc.input_ids, enc.attention_mask)
        out, _ = _targets(model, logits, enc.attention_mask, target)
    if record.features is None:
        raise UnsupportedModelError("model", "the site did not run in the forward", site)
    dropped = 1.0 - keep.to(record.features.dtype)
    mass = (record.features.detach() * dropped).sum(dim=(1, 2))
    base = _metric(base_out, index).double().cpu().numpy()
    ablated = _metric(out, index).double().cpu().numpy()
    return AblationResult(features, index.cpu().numpy(), base, ablated, ablated - base,
                          mass.double().cpu().numpy(), base_out.argmax(1).cpu().numpy(),
                          out.argmax(1).cpu().numpy())


@dataclass(frozen=True)
class SpliceFidelity:
    """How faithfully the model runs with an SAE in the loop (SAELens's ``kl_div_score``
    and prediction agreement).

    ``*_spliced``: with the error term (should be exact); ``*_reconstruction``: on the
    reconstruction alone; ``kl_zero``: with the site zero-ablated, the yardstick of
    ``kl_score = 1 - kl_reconstruction / kl_zero``. KL is ``KL(p_model || p_other)`` over
    the explained outputs (all non-padding positions of a causal LM), averaged.
    """

    agreement_spliced: float
    max_abs_logit_diff_spliced: float
    agreement_reconstruction: float
    kl_reconstruction: float
    kl_zero: float
    kl_score: float
    explained_variance: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _outputs(model: TextModel, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if model.kind == "causal_lm":
        return logits[mask.bool()]
    return logits


def splice_fidelity(model: TextModel, sae: SparseCoder, texts: str | Sequence[str], *,
                    layer: int, site: Site = "resid_post", positions: Positions = "all"
                    ) -> SpliceFidelity:
    """Compare the model's outputs with the SAE spliced in (with and without its error
    term, and with the site zero-ablated)."""
    batch = checks.texts("texts", texts, single=True)
    coder = as_coder(sae)
    check_site(model, coder, layer, site)
    checks.choice("positions", positions, POSITIONS)
    enc = model.encode(batch)
    ids, mask = enc.input_ids, enc.attention_mask

    def run(**kwargs: Any) -> tuple[torch.Tensor, Splice]:
        with spliced(model, coder, layer, site, positions=positions, attention_mask=mask,
                     **kwargs) as record:
            return _outputs(model, model.logits(ids, mask), mask).double(), record

    with torch.no_grad():
        clean = _outputs(model, model.logits(ids, mask), mask).double()
        exact, record = run()
        recon, _ = run(error_term=False)
        where = position_mask(mask, positions)

        def zero(a: torch.Tensor) -> torch.Tensor:
            return torch.where(where[..., None], torch.zeros_like(a), a)

        with at_site(model, layer, site, zero):
            zeroed = _outputs(model, model.logits(ids, mask), mask).double()
    logp = torch.log_softmax(clean, dim=-1)

    def kl(other: torch.Tensor) -> float:
        return float((logp.exp() * (logp - torch.log_softmax(other, dim=-1))).sum(-1).mean())

    if record.activation is None or record.reconstruction is None:
        raise UnsupportedModelError("model", "the site did not run in the forward", site)
    x = record.activation[where].double()
    x_hat = record.reconstruction[where].double()
    total = float(((x - x.mean(0)) ** 2).sum())
    ev = 1.0 - float(((x - x_hat) ** 2).sum()) / total if total > 0 else float("nan")
    kl_recon, kl_zero = kl(recon), kl(zeroed)
    return SpliceFidelity(
        agreement_spliced=float((exact.argmax(-1) == clean.argmax(-1)).double().mean()),
        max_abs_logit_diff_spliced=float((exact - clean).abs().max()),
        agreement_reconstruction=float((recon.argmax(-1) == clean.argmax(-1)).double().mean()),
        kl_reconstruction=kl_recon, kl_zero=kl_zero,
        kl_score=1.0 - kl_recon / kl_zero if kl_zero > 0 else float("nan"),
        explained_variance=ev)
