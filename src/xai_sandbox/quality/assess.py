"""The quality block stored with every explanation, and the per-model thresholds that judge
it.

The default block is cheap enough to run on every explanation (at most the explanation's
own time again, `benchmarks/bench_quality.py`): the completeness or additivity error the
method already reports, deletion and insertion curves of each method (every feature of a
tabular row in one batch; for images a few fractions of the pixels, fewer for the
one-pass methods whose own time is one backward pass), the rank stability across the
seeds already run for stochastic methods, and the agreement between the methods. The
heavier checks (infidelity, max-sensitivity, noise stability, the randomisation sanity
check) belong to the release gate (:mod:`xai_sandbox.quality.gate`).
"""

from __future__ import annotations

import hashlib
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from xai_sandbox.errors import InvalidInputError, known_fields, number_in
from xai_sandbox.explainers.explanation import Explanation
from xai_sandbox.models.adapters import ModelAdapter
from xai_sandbox.models.registry import RegisteredModel
from xai_sandbox.quality.faithfulness import curves, explained_output_fn, players_of
from xai_sandbox.quality.stability import method_agreement, seed_stability

__all__ = ["ONE_PASS_METHODS", "QualityThresholds", "assess", "assessed", "curve_baseline",
           "judge"]

# Methods whose own cost is about one forward and backward pass: their default image
# curves use one fraction (two forwards) so the block stays within the method's time.
ONE_PASS_METHODS = frozenset({"grad_cam", "grad_cam_pp", "saliency", "gradient_x_input"})
IMAGE_FRACTIONS = (0.05, 0.1, 0.2, 0.3, 0.4)
ONE_PASS_FRACTIONS = (0.5,)
Action = Literal["caveat", "withhold"]

# f(baseline) per model, target and baseline: a constant that image curves would otherwise
# pay a forward pass for on every call. Keyed on the adapter object, dropped with it.
_BASELINE_OUTPUTS: weakref.WeakKeyDictionary[ModelAdapter, dict[tuple[Any, ...], float]] = (
    weakref.WeakKeyDictionary())
_BASELINE_LOCK = threading.Lock()


@dataclass(frozen=True)
class QualityThresholds:
    """What a model's explanations must reach to be shown as they are.

    ``None`` switches a check off. ``min_gap``: insertion minus deletion area of the
    principal method (0 is what a random ranking scores on average);
    ``max_completeness_error``: relative completeness or additivity error of every method
    that has one; ``min_seed_spearman``: rank correlation of a sampling method across two
    seeds; ``min_agreement``: top-k overlap between every pair of methods. ``action``:
    ``caveat`` (shown, with the subject told it may be unreliable) or ``withhold`` (not
    shown; the decision goes to human review instead).
    """

    min_gap: float | None = 0.0
    max_completeness_error: float | None = 0.05
    min_seed_spearman: float | None = 0.8
    min_agreement: float | None = None
    agreement_k: int = 4
    action: Action = "caveat"

    @classmethod
    def from_dict(cls, raw: Any) -> QualityThresholds:
        if raw is None:
            return cls()
        raw = known_fields(raw, cls.__dataclass_fields__, "quality")
        limits = {"min_gap": (-10.0, 10.0), "max_completeness_error": (0.0, 10.0),
                  "min_seed_spearman": (-1.0, 1.0), "min_agreement": (0.0, 1.0)}
        out: dict[str, Any] = {}
        for name, (low, high) in limits.items():
            value = number_in(raw.get(name, getattr(cls, name)), low, high,
                              f"quality.{name}", nullable=True)
            out[name] = None if value is None else float(value)
        k = number_in(raw.get("agreement_k", cls.agreement_k), 1, 100, "quality.agreement_k",
                      integer=True)
        action = raw.get("action", cls.action)
        if action not in ("caveat", "withhold"):
            raise InvalidInputError("quality.action", "must be 'caveat' or 'withhold'", action)
        return cls(agreement_k=k, action=action, **out)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def curve_baseline(model: RegisteredModel, explanation: Explanation, x: np.ndarray
                   ) -> np.ndarray:
    """What a removed player is replaced by: the explanation's own baseline, else the
    model's reference row (the typical applicant), else zeros."""
    if explanation.baseline is not None:
        base = np.array(explanation.baseline, dtype=x.dtype)   # a writable copy
        return base[0] if base.ndim == x.ndim else base
    if model.reference is not None:
        return np.asarray(model.reference, dtype=x.dtype).reshape(x.shape[1:])
    return np.zeros(x.shape[1:], dtype=x.dtype)


def _baseline_output(adapter: ModelAdapter, explanation: Explanation, baseline: np.ndarray,
                     output_fn: Any) -> float:
    key = (explanation.output_space, int(explanation.target[0]),
           explanation.parameters.get("foil"),
           hashlib.sha256(np.ascontiguousarray(baseline).tobytes()).hexdigest())
    with _BASELINE_LOCK:
        found = _BASELINE_OUTPUTS.setdefault(adapter, {}).get(key)
    if found is not None:
        return found
    value = float(output_fn(baseline[None])[0])
    with _BASELINE_LOCK:   # explanations run on the service's worker threads
        known = _BASELINE_OUTPUTS.setdefault(adapter, {})
        if len(known) >= 64:
            known.pop(next(iter(known)))
        known[key] = value
    return value


def method_curves(model: RegisteredModel, x: np.ndarray, explanation: Explanation, *,
                  fractions: Any = "default", patch: int = 1,
                  order: np.ndarray | None = None) -> dict[str, Any]:
    """Deletion and insertion curves of the first row of ``explanation`` at ``x``."""
    adapter = model.adapter
    sample = x[0]
    players = players_of(explanation, sample.shape, schema=model.schema, patch=patch)
    output_fn = explained_output_fn(adapter, explanation)
    baseline = curve_baseline(model, explanation, x)
    image = sample.ndim == 3
    if isinstance(fractions, str) and fractions == "default":
        fractions = None if not image else (ONE_PASS_FRACTIONS if explanation.method in
                                            ONE_PASS_METHODS else IMAGE_FRACTIONS)
    # Tabular rows are cheap: f(x) is computed again, which checks that x is the input the
    # explanation was made for. An image keeps f(x) from the explanation and its
    # baseline's output from the cache.
    known_output = float(explanation.explained_output()[0]) if image else None
    base_output = _baseline_output(adapter, explanation, baseline, output_fn) if image \
        else None
    result = curves(output_fn, sample, baseline, players, fractions=fractions, order=order,
                    output=known_output, baseline_output=base_output)
    expected = float(explanation.explained_output()[0])
    if not image and not np.isclose(result.output, expected, rtol=1e-4, atol=1e-6):
        raise InvalidInputError("x", "must be the input the explanation was computed on (the "
                                "model's output here differs from the explanation's)",
                                f"{result.output} vs {expected}")
    return result.to_dict()


def assess(model: RegisteredModel, x: Any, explanations: Sequence[Explanation], *,
           reruns: Sequence[Explanation] = (), thresholds: QualityThresholds | None = None,
           fractions: Any = "default", patch: int = 1) -> dict[str, Any]:
    """The default quality block of the explanations of one row ``x``.

    ``explanations[0]`` is the principal method (the one whose reasons are shown);
    ``reruns`` are the same methods run with another seed (stochastic methods only).
    """
    if not explanations:
        raise InvalidInputError("explanations", "must hold at least one explanation", [])
    started = time.perf_counter()
    thresholds = thresholds or QualityThresholds()
    X = model.adapter.validate_inputs(x)[:1]
    methods: dict[str, Any] = {}
    for e in explanations:
        block: dict[str, Any] = {"completeness_error": e.completeness_error,
                                 "curves": method_curves(model, X, e, fractions=fractions,
                                                         patch=patch)}
        again = next((r for r in reruns if r.method == e.method), None)
        block["seed_stability"] = (seed_stability(e, again) if again is not None
                                   else None)
        methods[e.method] = block
    agreement = (method_agreement(explanations, k=thresholds.agreement_k)
                 if len(explanations) > 1 else None)
    block = {"level": "default", "principal": explanations[0].method, "methods": methods,
             "agreement": agreement, "thresholds": thresholds.to_dict()}
    block["verdict"] = judge(block, thresholds)
    block["wall_time_s"] = time.perf_counter() - started
    return block


def assessed(model: RegisteredModel, x: Any, explanations: Sequence[Explanation], *,
             reruns: Sequence[Explanation] = (), thresholds: QualityThresholds | None = None,
             fractions: Any = "default", patch: int = 1
             ) -> tuple[list[Explanation], dict[str, Any]]:
    """:func:`assess`, and the explanations with the block attached.

    Each returned explanation carries the row's whole block (``Explanation.quality``,
    serialised by ``to_json()``): the principal method, every method's checks, their
    agreement and the verdict, so a served explanation says how far it can be trusted
    without its report. The inputs are left as they are (an explanation is immutable).
    """
    block = assess(model, x, explanations, reruns=reruns, thresholds=thresholds,
                   fractions=fractions, patch=patch)
    return [e.with_quality(block) for e in explanations], block


def judge(block: Mapping[str, Any], thresholds: QualityThresholds) -> dict[str, Any]:
    """Whether a quality block passes the thresholds; if not, why and what happens."""
    why: list[str] = []
    principal = block["principal"]
    gap_curves = block["methods"][principal]["curves"]
    if thresholds.min_gap is not None and gap_curves["gap"] is not None and (
            gap_curves["gap"] < thresholds.min_gap):
        why.append(f"{principal}: deletion/insertion gap {gap_curves['gap']:.2f} below "
                   f"{thresholds.min_gap:.2f} (a random ranking scores 0)")
    for method, m in block["methods"].items():
        err = m["completeness_error"]
        if thresholds.max_completeness_error is not None and err is not None and (
                err > thresholds.max_completeness_error):
            why.append(f"{method}: completeness error {err:.1%} above "
                       f"{thresholds.max_completeness_error:.1%}")
        seeds = m.get("seed_stability")
        if thresholds.min_seed_spearman is not None and seeds is not None and (
                seeds["spearman"] < thresholds.min_seed_spearman):
            why.append(f"{method}: unstable across seeds (Spearman {seeds['spearman']:.2f} "
                       f"below {thresholds.min_seed_spearman:.2f})")
    agreement = block.get("agreement")
    if thresholds.min_agreement is not None and agreement and agreement["pairs"]:
        for pair in agreement["pairs"]:
            if pair["top_k_overlap"] < thresholds.min_agreement:
                why.append(f"{' and '.join(pair['methods'])} agree on "
                           f"{pair['top_k_overlap']:.0%} of their top {pair['k']} "
                           f"(at least {thresholds.min_agreement:.0%} needed)")
    reliable = not why
    return {"reliable": reliable, "why": why,
            "action": "show" if reliable else thresholds.action}
