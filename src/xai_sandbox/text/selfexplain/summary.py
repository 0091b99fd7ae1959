"""Many self-explanation checks summarised: rates, means and pooled agreement."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from xai_sandbox.errors import InvalidInputError
from xai_sandbox.text import checks
from xai_sandbox.text.selfexplain.agreement import (
    null_scores,
    permutation_test,
)
from xai_sandbox.text.selfexplain.check import SelfExplanationReport
from xai_sandbox.text.selfexplain.parsing import STATISTICS, rate_of

__all__ = ["summarise"]


# ---------------------------------------------------------------------------- aggregate
def _mean(values: Sequence[float | None]) -> float | None:
    kept = [float(v) for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(kept)) if kept else None

def _pooled_agreement(reports: Sequence[SelfExplanationReport], n_permutations: int,
                      random_state: int) -> dict[str, Any] | None:
    """Across examples: the mean of each statistic against the permutation null of the
    mean (each example's random word sets drawn independently, from one generator)."""
    used = [(r, r.agreement) for r in reports if r.agreement is not None]
    if not used:
        return None
    rng = np.random.default_rng(random_state)
    observed: dict[str, list[float]] = {name: [] for name in STATISTICS}
    zs: dict[str, list[float | None]] = {name: [] for name in STATISTICS}
    nulls: dict[str, list[np.ndarray]] = {name: [] for name in STATISTICS}
    for report, agree in used:
        null = null_scores(report.scores, int(report.evidence.sum()), int(agree["k"]),
                     n_permutations, rng)
        for name in STATISTICS:
            observed[name].append(float(agree[name]["value"]))
            zs[name].append(agree[name]["z"])
            nulls[name].append(null[name])
    out: dict[str, Any] = {"n_examples": len(used), "n_permutations": n_permutations,
                           "random_state": random_state}
    for name in STATISTICS:
        test = permutation_test(float(np.mean(observed[name])), np.mean(nulls[name], axis=0))
        test["mean_z"] = _mean(zs[name])
        out[name] = test
    return out


def summarise(reports: Sequence[SelfExplanationReport], *, n_permutations: int = 1000,
              random_state: int = 0) -> dict[str, Any]:
    """Aggregate self-explanation checks over examples (LLM.md 2.6, step 6).

    Returns the parse-failure rate (with the reasons), the hallucination rate (of the
    distinct quotes of valid answers, and the share of answers with any), agreement (the
    mean of each statistic with a pooled permutation test and the mean per-example z),
    mean comprehensiveness and sufficiency of the stated evidence and of IG's top-k, mean
    AOPC, the redaction flip rate (of re-asked answers that were valid) and the rate at
    which the model's own top label changed on the redacted text.
    """
    if isinstance(reports, SelfExplanationReport) or not isinstance(reports, Sequence) \
            or not reports or not all(isinstance(r, SelfExplanationReport) for r in reports):
        raise InvalidInputError("reports", "must be a non-empty list of "
                                "SelfExplanationReport", type(reports).__name__)
    n_perm = checks.integer("n_permutations", n_permutations, 20)
    valid = [r for r in reports if r.valid]
    quotes = sum(len(r.answer.evidence) for r in valid)
    invented = sum(len(r.answer.hallucinated) for r in valid)
    reasons: dict[str, int] = {}
    for r in reports:
        if not r.valid:
            key = (r.answer.reason or "").split(":")[0]
            reasons[key] = reasons.get(key, 0) + 1
    rationales: dict[str, Any] = {}
    for which in ("evidence", "ig_top_k"):
        rows = [r.rationales[which] for r in valid if r.rationales is not None]
        rationales[which] = {
            "n": len(rows),
            "comprehensiveness": _mean([x["comprehensiveness"] for x in rows]),
            "sufficiency": _mean([x["sufficiency"] for x in rows])}
    redone = [r.redaction for r in valid if r.redaction is not None]
    answered = [x for x in redone if x.flipped is not None]
    model_flips = sum(1 for r in valid if r.redaction is not None and r.answer.label is not None
                      and r.redaction.model_label is not None
                      and r.redaction.model_label != _top_label(r))
    return {
        "n_reports": len(reports), "n_valid": len(valid),
        "parse_failure_rate": 1 - len(valid) / len(reports), "parse_failures": reasons,
        "n_quotes": quotes, "n_hallucinated": invented,
        "hallucination_rate": rate_of(invented, quotes),
        "answers_with_hallucination_rate": rate_of(
            sum(1 for r in valid if r.answer.hallucinated), len(valid)),
        "mean_confidence": _mean([r.answer.confidence for r in valid]),
        "agreement": _pooled_agreement(valid, n_perm, random_state),
        "rationales": rationales,
        "aopc": {"comprehensiveness": _mean([r.aopc["aopc_comprehensiveness"]
                                             for r in valid if r.aopc is not None]),
                 "sufficiency": _mean([r.aopc["aopc_sufficiency"]
                                       for r in valid if r.aopc is not None])},
        "redaction": {"n": len(redone), "n_answered": len(answered),
                      "flip_rate": rate_of(sum(1 for x in answered if x.flipped),
                                         len(answered)),
                      "model_flip_rate": rate_of(model_flips, len(redone))},
        "removal": sorted({r.removal for r in reports}),
    }


def _top_label(report: SelfExplanationReport) -> str | None:
    """The model's own top label on the full input."""
    if report.probabilities is None:
        return None
    return report.labels[int(np.argmax(report.probabilities))]
