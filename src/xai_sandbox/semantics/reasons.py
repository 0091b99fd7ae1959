"""Principal reasons for an outcome, from a feature-level explanation.

Rules (Regulation B 1002.9(b)(2) and its commentary, GDPR Art. 22, AI Act Art. 86):
- at most four reasons, ranked by how much they pushed toward the outcome;
- only factors that pushed toward the outcome are reasons for it;
- a protected feature is never given as a reason; when one weighed on the outcome it is
  listed apart, for the compliance report;
- each reason carries its code and catalogue text, the person's own value, an impact level
  (HIGH, MEDIUM, LOW: its share of what pushed toward the outcome) and a sentence that
  says which way the factor pushed, so it cannot be read the wrong way round.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

import numpy as np
import yaml

from xai_sandbox.errors import InvalidInputError
from xai_sandbox.explainers.explanation import Explanation
from xai_sandbox.models.schema import LOCALES, FeatureSchema

__all__ = ["Reason", "ReasonCatalogue", "ReasonSet", "load_catalogue", "principal_reasons"]

Impact = Literal["HIGH", "MEDIUM", "LOW"]
MAX_REASONS = 4

_SENTENCE = {
    "en": "{feature} ({value}) pushed the decision toward \"{outcome}\"{why}. {code_text}.",
    "zh": "{feature}（{value}）使决定倾向于“{outcome}”{why}。{code_text}。",
}
# Why, against the reference (a typical applicant): the value's side, never a guess at
# another factor ("a high debt ratio" must not read as "a low income").
_WHY = {
    "higher": {"en": ", because it is higher than for a typical applicant ({ref})",
               "zh": "，因为高于典型申请人（{ref}）"},
    "lower": {"en": ", because it is lower than for a typical applicant ({ref})",
              "zh": "，因为低于典型申请人（{ref}）"},
    "differs": {"en": ", compared with a typical applicant ({ref})",
                "zh": "，相对于典型申请人（{ref}）"},
}


def _why(schema: FeatureSchema, name: str, value: Any, reference: Mapping[str, Any] | None,
         locale: str) -> str:
    if reference is None or name not in reference:
        return ""
    ref = reference[name]
    if schema.feature(name).kind == "categorical":
        side = "differs" if ref != value else None
    else:
        side = "higher" if float(value) > float(ref) else (
            "lower" if float(value) < float(ref) else None)
    if side is None:
        return ""
    return _WHY[side][locale].format(ref=schema.display_value(name, ref, locale))


@dataclass(frozen=True)
class ReasonCatalogue:
    version: str
    texts: Mapping[str, Mapping[str, str]]

    def text(self, code: str | None, locale: str, specify: str) -> str:
        """The code's text; "Other" is specified with the factor, as Form C-1 asks."""
        if code is None or code not in self.texts or code == "C1-24":
            other = self.texts.get("C1-24", {}).get(locale, "Other")
            return f"{other}: {specify}" if locale == "en" else f"{other}：{specify}"
        return self.texts[code][locale]


@functools.lru_cache(maxsize=4)
def load_catalogue(name: str = "reg-b-form-c1") -> ReasonCatalogue:
    """A reason catalogue shipped with the package (default: Regulation B Form C-1)."""
    path = resources.files("xai_sandbox").joinpath("data", "reasons", f"{name}.yaml")
    if not path.is_file():
        raise InvalidInputError("name", "must be a shipped reason catalogue", name)
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    return ReasonCatalogue(version=raw["version"], texts=raw["reasons"])


@dataclass(frozen=True)
class Reason:
    rank: int
    feature: str
    reason_code: str | None
    contribution: float
    impact: Impact
    text: Mapping[str, str]


@dataclass(frozen=True)
class ReasonSet:
    outcome: str
    reasons: tuple[Reason, ...]
    protected_weighed: tuple[str, ...]   # protected features that pushed toward the outcome
    catalogue_version: str

    def to_dict(self, locale: str | None = None) -> dict[str, Any]:
        """JSON-safe; with a locale, one text per reason and no raw numbers (subject view)."""
        if locale is None:
            reasons = [{"rank": r.rank, "feature": r.feature, "reason_code": r.reason_code,
                        "contribution": r.contribution, "impact": r.impact,
                        "text": dict(r.text)} for r in self.reasons]
            return {"outcome": self.outcome, "reasons": reasons,
                    "protected_weighed": list(self.protected_weighed),
                    "catalogue_version": self.catalogue_version}
        return {"outcome": self.outcome,
                "reasons": [{"rank": r.rank, "impact": r.impact, "text": r.text[locale]}
                            for r in self.reasons]}


def _impact(share: float) -> Impact:
    return "HIGH" if share >= 0.25 else "MEDIUM" if share >= 0.10 else "LOW"


def principal_reasons(explanation: Explanation, schema: FeatureSchema,
                      row: Mapping[str, Any], *, outcome: Mapping[str, str] | str,
                      index: int = 0, catalogue: ReasonCatalogue | None = None,
                      reference: Mapping[str, Any] | None = None) -> ReasonSet:
    """At most four ranked reasons for the explained outcome of row ``index``.

    ``explanation`` must hold one value per schema feature (grouped), explaining the
    output of the outcome given (positive values pushed toward it). ``outcome`` names
    it, per locale or as one string. ``reference`` (the baseline row the attributions
    are measured against) lets each sentence say on which side of it the value lies.
    """
    if explanation.feature_names != schema.names:
        raise InvalidInputError("explanation", "must hold one value per schema feature "
                                "(explain a registered model, or group the columns)",
                                explanation.feature_names)
    if not 0 <= index < explanation.n_rows:
        raise InvalidInputError("index", f"must be in [0, {explanation.n_rows})", index)
    names = {loc: outcome for loc in LOCALES} if isinstance(outcome, str) else dict(outcome)
    missing = [loc for loc in LOCALES if not names.get(loc)]
    if missing:
        raise InvalidInputError("outcome", f"needs a name for every locale {list(LOCALES)}",
                                outcome)
    unknown = sorted(set(schema.names) - set(row))
    if unknown:
        raise InvalidInputError("row", "must give every feature's value", unknown)
    catalogue = catalogue or load_catalogue()
    values = np.asarray(explanation.values[index], dtype=np.float64)
    pushing = values.clip(min=0)
    total = float(pushing.sum())
    order = [j for j in np.argsort(-values, kind="stable") if values[j] > 0]
    reasons: list[Reason] = []
    protected: list[str] = []
    for j in order:
        spec = schema.features[j]
        if spec.protected:
            protected.append(spec.name)
            continue
        if len(reasons) == MAX_REASONS:
            continue
        text = {loc: _SENTENCE[loc].format(
            feature=spec.display.get(loc, spec.name),
            value=schema.display_value(spec.name, row[spec.name], loc),
            outcome=names[loc], why=_why(schema, spec.name, row[spec.name], reference, loc),
            code_text=catalogue.text(spec.reason_code, loc, spec.display.get(loc, spec.name)))
            for loc in LOCALES}
        reasons.append(Reason(rank=len(reasons) + 1, feature=spec.name,
                              reason_code=spec.reason_code, contribution=float(values[j]),
                              impact=_impact(float(values[j]) / total if total else 0.0),
                              text=text))
    return ReasonSet(outcome=names["en"], reasons=tuple(reasons),
                     protected_weighed=tuple(protected), catalogue_version=catalogue.version)
