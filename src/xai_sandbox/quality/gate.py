"""The release gate: run every quality metric on a held-out sample, record the result as
the model's baseline, and stop a release whose explanations got worse.

:func:`validate` computes, per method and averaged over the sample's rows: deletion and
insertion areas and their gap, the completeness error, Captum's infidelity and
max-sensitivity, the rank stability under small input noise and (for sampling methods)
across seeds; once per method, the randomisation sanity check; and the top-k agreement of
every pair of methods. :func:`compare` holds a run against a recorded baseline: each
metric has a direction (higher or lower is better) and a tolerance, and anything worse
than the baseline by more than the tolerance, a sanity check that stopped passing, or a
metric no longer measured is a regression. A baseline speaks for one model on one sample
with one set of settings: a run whose model fingerprint, sample or settings differ from
the baseline's fails as a *mismatch* unless the caller re-baselines (``rebaseline=True``:
the metrics are still held against the old baseline, and a run without regressions
becomes the new one).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from xai_sandbox.audit.canonical import canonical_json
from xai_sandbox.errors import InvalidInputError
from xai_sandbox.explainers import EXPLAINERS, explain
from xai_sandbox.explainers.explanation import library_versions
from xai_sandbox.models.registry import RegisteredModel
from xai_sandbox.quality.assess import curve_baseline, method_curves
from xai_sandbox.quality.faithfulness import explained_output_fn, infidelity, players_of
from xai_sandbox.quality.stability import (
    max_sensitivity,
    method_agreement,
    randomisation_check,
    seed_stability,
)

__all__ = ["GATE_SCHEMA", "TOLERANCES", "Tolerance", "compare", "load_baseline",
           "mismatches", "save_baseline", "validate"]

GATE_SCHEMA = "xai-sandbox.quality-gate/1"
STOCHASTIC = frozenset({"kernel_shap", "lime", "permutation_shap", "smoothgrad"})
"""The methods that sample: their result depends on the seed."""


@dataclass(frozen=True)
class Tolerance:
    """How a metric is judged: which way is better, and how much worse is allowed
    (absolute, or relative to the baseline's magnitude)."""

    better: Literal["higher", "lower"]
    allowed: float
    relative: bool = False

    def regressed(self, current: float, baseline: float) -> bool:
        slack = self.allowed * max(abs(baseline), 1e-12) if self.relative else self.allowed
        worse = baseline - current if self.better == "higher" else current - baseline
        return worse > slack


TOLERANCES: dict[str, Tolerance] = {
    "gap": Tolerance("higher", 0.05),
    "deletion_area": Tolerance("lower", 0.05),
    "insertion_area": Tolerance("higher", 0.05),
    "completeness_error_max": Tolerance("lower", 0.01),
    "infidelity": Tolerance("lower", 0.25, relative=True),
    "max_sensitivity": Tolerance("lower", 0.25, relative=True),
    "noise_spearman": Tolerance("higher", 0.05),
    "seed_spearman": Tolerance("higher", 0.05),
    "randomisation_final": Tolerance("lower", 0.1),
    "randomisation_classifier": Tolerance("lower", 0.1),
    "agreement": Tolerance("higher", 0.1),
}


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def _median(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.median(kept)) if kept else None


# Curve metrics are normalised by f(x) - f(baseline), which a few rows make small: the
# median keeps one such row from moving the whole sample.
_AGGREGATE = {"gap": _median, "deletion_area": _median, "insertion_area": _median}


def validate(model: RegisteredModel, X: Any, methods: Sequence[str], *,
             training: tuple[np.ndarray, np.ndarray] | None = None, random_state: int = 0,
             n_perturb: int = 8, sanity_rows: int = 8, k: int = 4,
             fractions: Any = "default") -> dict[str, Any]:
    """Every quality metric of ``methods`` on the held-out rows ``X``."""
    if isinstance(methods, str) or not methods:
        raise InvalidInputError("methods", "must be a non-empty list of method names", methods)
    unknown = [m for m in methods if m not in EXPLAINERS]
    if unknown:
        raise InvalidInputError("methods", f"must name methods of {sorted(EXPLAINERS)}",
                                unknown)
    rows = model.adapter.validate_inputs(X)
    if rows.shape[0] < 2:
        raise InvalidInputError("X", "needs at least 2 held-out rows", rows.shape[0])
    per_method: dict[str, dict[str, list[Any]]] = {m: {} for m in methods}
    overlaps: dict[str, list[float]] = {}
    for i in range(rows.shape[0]):
        x = rows[i:i + 1]
        explanations = []
        for method in methods:
            e = explain(model, x, method=method, random_state=random_state)
            explanations.append(e)
            seen = per_method[method]
            c = method_curves(model, x, e, fractions=fractions)
            for name in ("gap", "deletion_area", "insertion_area"):
                seen.setdefault(name, []).append(c[name])
            seen.setdefault("completeness_error", []).append(e.completeness_error)
            players = players_of(e, x[0].shape, schema=model.schema)
            seen.setdefault("infidelity", []).append(infidelity(
                explained_output_fn(model.adapter, e), x[0], curve_baseline(model, e, x),
                players, random_state=random_state + i))
            sens = max_sensitivity(model, x, method, n_perturb=n_perturb,
                                   random_state=random_state + i, explanation=e)
            seen.setdefault("max_sensitivity", []).append(sens["max_sensitivity"])
            seen.setdefault("noise_spearman", []).append(sens["noise_spearman"]["mean"])
            if method in STOCHASTIC:
                again = explain(model, x, method=method, target=e.target,
                                random_state=random_state + 1)
                seen.setdefault("seed_spearman", []).append(
                    seed_stability(e, again)["spearman"])
        for pair in method_agreement(explanations, k=k)["pairs"]:
            overlaps.setdefault(" & ".join(pair["methods"]), []).append(pair["top_k_overlap"])
    sanity = {m: randomisation_check(model, rows[:sanity_rows], m, training=training,
                                     random_state=random_state) for m in methods}
    metrics: dict[str, float | None] = {}
    summary: dict[str, Any] = {}
    for method, seen in per_method.items():
        errors = [v for v in seen["completeness_error"] if v is not None]
        block = {name: _AGGREGATE.get(name, _mean)(values) for name, values in seen.items()
                 if name != "completeness_error"}
        block["curves_defined"] = float(np.mean([v is not None for v in seen["gap"]]))
        block["completeness_error_max"] = float(max(errors)) if errors else None
        check = sanity[method]
        block["randomisation_final"] = check.get("final")
        block["randomisation_classifier"] = check.get("classifier")
        summary[method] = {**block, "randomisation": check}
        for name, value in block.items():
            metrics[f"{method}.{name}"] = value
        metrics[f"{method}.randomisation_passed"] = (None if check["passed"] is None
                                                     else float(check["passed"]))
    for pair, values in overlaps.items():
        metrics[f"agreement.{pair}"] = float(np.mean(values))
    return {"schema_version": GATE_SCHEMA, "model": model.identity,
            "created_at": datetime.now(UTC).isoformat(),
            "sample": {"rows": int(rows.shape[0]),
                       "sha256": hashlib.sha256(np.ascontiguousarray(rows).tobytes())
                       .hexdigest()},
            "settings": {"methods": list(methods), "random_state": random_state,
                         "n_perturb": n_perturb, "sanity_rows": sanity_rows, "k": k},
            "methods": summary, "metrics": metrics,
            "library_versions": library_versions()}


def _tolerance(metric: str, overrides: Mapping[str, float]) -> Tolerance | None:
    name = metric.split(".", 1)[1] if not metric.startswith("agreement.") else "agreement"
    base = TOLERANCES.get(name)
    if base is None:
        return None
    allowed = overrides.get(name, base.allowed)
    return Tolerance(base.better, float(allowed), base.relative)


_SETTINGS = ("methods", "random_state", "n_perturb", "sanity_rows", "k")


def mismatches(current: Mapping[str, Any], baseline: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Where a run is not comparable with a baseline: another model (its id or the
    fingerprint of its weights), another sample (row count or SHA-256 of the rows), or
    other settings."""
    found: list[dict[str, Any]] = []

    def differ(name: str, old: Any, new: Any, why: str) -> None:
        if old != new:
            found.append({"field": name, "baseline": old, "current": new, "why": why})

    old_model, new_model = baseline.get("model") or {}, current.get("model") or {}
    differ("model.model_id", old_model.get("model_id"), new_model.get("model_id"),
           "the baseline was recorded for another model")
    differ("model.fingerprint", old_model.get("fingerprint"), new_model.get("fingerprint"),
           "the model's weights differ from those the baseline was recorded on")
    old_sample, new_sample = baseline.get("sample") or {}, current.get("sample") or {}
    differ("sample.rows", old_sample.get("rows"), new_sample.get("rows"),
           "the sample has another number of rows")
    differ("sample.sha256", old_sample.get("sha256"), new_sample.get("sha256"),
           "the sample holds other rows")
    old_settings, new_settings = baseline.get("settings") or {}, current.get("settings") or {}
    for name in _SETTINGS:
        differ(f"settings.{name}", old_settings.get(name), new_settings.get(name),
               "the metrics were computed with other settings")
    return found


def compare(current: Mapping[str, Any], baseline: Mapping[str, Any], *,
            tolerances: Mapping[str, float] | None = None,
            rebaseline: bool = False) -> dict[str, Any]:
    """Hold a validation against the recorded baseline.

    ``passed`` needs no regression and, unless ``rebaseline``, no mismatch (another
    model fingerprint, sample or settings than the baseline's: the numbers would not be
    comparable, so the gate says so rather than guess). With ``rebaseline`` a mismatch is
    reported but accepted: the caller means to replace the baseline, and the metrics are
    still held against the old one.
    """
    for name, doc in (("current", current), ("baseline", baseline)):
        if not isinstance(doc, Mapping) or doc.get("schema_version") != GATE_SCHEMA:
            raise InvalidInputError(name, f"must be a validation result ({GATE_SCHEMA})",
                                    doc.get("schema_version") if isinstance(doc, Mapping)
                                    else type(doc).__name__)
    if not isinstance(rebaseline, bool):
        raise InvalidInputError("rebaseline", "must be True or False", rebaseline)
    overrides = dict(tolerances or {})
    unknown = sorted(set(overrides) - set(TOLERANCES))
    if unknown:
        raise InvalidInputError("tolerances", f"must name metrics of {sorted(TOLERANCES)}",
                                unknown)
    now, then = current["metrics"], baseline["metrics"]
    regressions: list[dict[str, Any]] = []
    checked: list[dict[str, Any]] = []
    for metric, old in sorted(then.items()):
        new = now.get(metric)
        if metric.endswith(".randomisation_passed"):
            if old == 1.0 and new != 1.0:
                regressions.append({"metric": metric, "baseline": old, "current": new,
                                    "rule": "the sanity check passed before and must pass"})
            continue
        if old is None:
            continue
        if new is None:
            regressions.append({"metric": metric, "baseline": old, "current": None,
                                "rule": "measured before, not measured now"})
            continue
        rule = _tolerance(metric, overrides)
        if rule is None:
            continue
        entry = {"metric": metric, "baseline": old, "current": new,
                 "rule": f"{rule.better} is better; at most {rule.allowed:g}"
                         f"{' of the baseline' if rule.relative else ''} worse"}
        checked.append(entry)
        if rule.regressed(float(new), float(old)):
            regressions.append(entry)
    different = mismatches(current, baseline)
    return {"passed": not regressions and (rebaseline or not different),
            "regressions": regressions, "mismatches": different, "rebaseline": rebaseline,
            "checked": len(checked),
            "model": {"baseline": dict(baseline["model"]), "current": dict(current["model"])},
            "same_sample": baseline["sample"]["sha256"] == current["sample"]["sha256"]}


def save_baseline(result: Mapping[str, Any], path: str | Path) -> Path:
    """Write a validation as the model's baseline (canonical JSON, mode 0644)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_bytes(canonical_json(dict(result)))
    tmp.replace(target)
    return target


def load_baseline(path: str | Path) -> dict[str, Any]:
    target = Path(path)
    if not target.is_file():
        raise InvalidInputError("baseline", "no recorded baseline at this path: run "
                                "`xai-sandbox validate --record` on the released model first",
                                str(target))
    try:
        doc = json.loads(target.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInputError("baseline", "must be a JSON validation result", str(target)
                                ) from exc
    if not isinstance(doc, dict) or doc.get("schema_version") != GATE_SCHEMA:
        raise InvalidInputError("baseline", f"must be a validation result ({GATE_SCHEMA})",
                                str(target))
    return doc
