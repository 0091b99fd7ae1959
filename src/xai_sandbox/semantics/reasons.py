"""Principal reasons for an outcome, from a feature-level explanation, and a check that
every reason is true.

Rules (Regulation B 1002.9(b)(2) and its commentary, GDPR Art. 22, AI Act Art. 86):
- at most four reasons, ranked by how much they pushed toward the outcome;
- only factors that pushed toward the outcome are reasons for it;
- an adverse outcome gets adverse-action reasons (catalogue codes); a favourable one is told
  what helped, never an adverse-action code;
- a code is given only when its text is true of the person's own value (the schema says
  which values a code fits: ``FeatureSpec.adverse_code``); otherwise the reason is "Other"
  and names the factor and value in words;
- a protected feature is never given as a reason; when one weighed on the outcome it is
  listed apart, for the compliance report;
- each reason carries its code and catalogue text, the person's own value, an impact level
  (HIGH, MEDIUM, LOW: its share of what pushed toward the outcome) and a sentence that
  says which way the factor pushed, so it cannot be read the wrong way round.

:func:`check_reasons` re-derives all of this from the explanation, the schema and the row,
and lists every statement that does not hold; the decision pipeline runs it on every report.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

import numpy as np
import yaml

from xai_sandbox.errors import InvalidInputError
from xai_sandbox.explainers.explanation import Explanation
from xai_sandbox.models.schema import LOCALES, FeatureSchema, FeatureSpec

__all__ = ["Reason", "ReasonCatalogue", "ReasonSet", "check_reasons", "load_catalogue",
           "principal_reasons", "reason_codes"]

Impact = Literal["HIGH", "MEDIUM", "LOW"]
Direction = Literal["adverse", "favourable"]
MAX_REASONS = 4
OTHER = "C1-24"

_SENTENCE = {
    "adverse": {
        "en": "{feature} ({value}) pushed the decision toward \"{outcome}\"{why}. {code_text}.",
        "zh": "{feature}（{value}）使决定倾向于“{outcome}”{why}。{code_text}。"},
    "favourable": {
        "en": "{feature} ({value}) helped the decision toward \"{outcome}\"{why}.{extra}",
        "zh": "{feature}（{value}）有助于使决定倾向于“{outcome}”{why}。{extra}"},
}
# "Other" specified with the factor and the person's value, as a phrase one can read.
_OTHER = {"en": "{other}: {feature} of {value} weighed against the application",
          "zh": "{other}：{feature}为{value}，对申请不利"}
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


def _side(spec: FeatureSpec, value: Any, ref: Any) -> str | None:
    if spec.kind == "categorical":
        return "differs" if ref != value else None
    a, b = float(value), float(ref)
    return "higher" if a > b else "lower" if a < b else None


def _why(schema: FeatureSchema, name: str, value: Any, reference: Mapping[str, Any] | None,
         locale: str) -> str:
    if reference is None or name not in reference:
        return ""
    side = _side(schema.feature(name), value, reference[name])
    if side is None:
        return ""
    return _WHY[side][locale].format(ref=schema.display_value(name, reference[name], locale))


@dataclass(frozen=True)
class ReasonCatalogue:
    version: str
    texts: Mapping[str, Mapping[str, str]]

    def text(self, code: str | None, locale: str, specify: str) -> str:
        """The code's text; "Other" is specified with the factor, as Form C-1 asks."""
        if code is None or code not in self.texts or code == OTHER:
            other = self.texts.get(OTHER, {}).get(locale, "Other")
            return f"{other}: {specify}" if locale == "en" else f"{other}：{specify}"
        return self.texts[code][locale]

    def other(self, feature: str, value: str, locale: str) -> str:
        """Form C-1's "Other, specify": the factor and the person's value, in words."""
        other = self.texts.get(OTHER, {}).get(locale, "Other")
        return _OTHER[locale].format(other=other, feature=feature, value=value)


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
    reason_code: str | None   # None for what helped (no adverse-action code applies)
    contribution: float
    impact: Impact
    text: Mapping[str, str]
    direction: Direction = "adverse"


@dataclass(frozen=True)
class ReasonSet:
    outcome: str
    reasons: tuple[Reason, ...]
    protected_weighed: tuple[str, ...]   # protected features that pushed toward the outcome
    catalogue_version: str
    adverse: bool = True   # adverse-action reasons, or what helped a favourable outcome

    def to_dict(self, locale: str | None = None) -> dict[str, Any]:
        """JSON-safe; with a locale, one text per reason and no raw numbers (subject view)."""
        if locale is None:
            reasons = [{"rank": r.rank, "feature": r.feature, "reason_code": r.reason_code,
                        "direction": r.direction, "contribution": r.contribution,
                        "impact": r.impact, "text": dict(r.text)} for r in self.reasons]
            return {"outcome": self.outcome, "adverse": self.adverse, "reasons": reasons,
                    "protected_weighed": list(self.protected_weighed),
                    "catalogue_version": self.catalogue_version}
        return {"outcome": self.outcome,
                "reasons": [{"rank": r.rank, "impact": r.impact, "text": r.text[locale]}
                            for r in self.reasons]}


def _impact(share: float) -> Impact:
    return "HIGH" if share >= 0.25 else "MEDIUM" if share >= 0.10 else "LOW"


def _outcome_names(outcome: Mapping[str, str] | str) -> dict[str, str]:
    names = {loc: outcome for loc in LOCALES} if isinstance(outcome, str) else dict(outcome)
    missing = [loc for loc in LOCALES if not names.get(loc)]
    if missing:
        raise InvalidInputError("outcome", f"needs a name for every locale {list(LOCALES)}",
                                outcome)
    return names


def _reference_of(name: str, reference: Mapping[str, Any] | None) -> Any:
    return None if reference is None else reference.get(name)


def _code_for(spec: FeatureSpec, value: Any, reference: Mapping[str, Any] | None,
              adverse: bool) -> str | None:
    if not adverse:
        return None
    return spec.adverse_code(value, _reference_of(spec.name, reference)) or OTHER


def _texts(schema: FeatureSchema, spec: FeatureSpec, value: Any, code: str | None,
           names: Mapping[str, str], reference: Mapping[str, Any] | None,
           catalogue: ReasonCatalogue, adverse: bool) -> dict[str, str]:
    out = {}
    for loc in LOCALES:
        feature = spec.display.get(loc, spec.name)
        shown = schema.display_value(spec.name, value, loc)
        why = _why(schema, spec.name, value, reference, loc)
        if adverse:
            code_text = (catalogue.other(feature, shown, loc) if code == OTHER
                         else catalogue.text(code, loc, feature))
            out[loc] = _SENTENCE["adverse"][loc].format(
                feature=feature, value=shown, outcome=names[loc], why=why, code_text=code_text)
        else:
            extra = spec.favourable.get(loc, "") if spec.favourable else ""
            extra = (f" {extra}." if loc == "en" else f"{extra}。") if extra else ""
            out[loc] = _SENTENCE["favourable"][loc].format(
                feature=feature, value=shown, outcome=names[loc], why=why, extra=extra)
    return out


def _checked(explanation: Explanation, schema: FeatureSchema, row: Mapping[str, Any],
             index: int) -> np.ndarray:
    if explanation.feature_names != schema.names:
        raise InvalidInputError("explanation", "must hold one value per schema feature "
                                "(explain a registered model, or group the columns)",
                                explanation.feature_names)
    if not 0 <= index < explanation.n_rows:
        raise InvalidInputError("index", f"must be in [0, {explanation.n_rows})", index)
    unknown = sorted(set(schema.names) - set(row))
    if unknown:
        raise InvalidInputError("row", "must give every feature's value", unknown)
    return np.asarray(explanation.values[index], dtype=np.float64)


def _ranked(values: np.ndarray, schema: FeatureSchema) -> tuple[list[int], list[str]]:
    """The features that give the reasons (the largest positive values first, at most
    MAX_REASONS, protected ones never) and the protected features that pushed toward the
    outcome (weighed, never given as reasons)."""
    order = [int(j) for j in np.argsort(-values, kind="stable") if values[j] > 0]
    protected = [schema.features[j].name for j in order if schema.features[j].protected]
    chosen = [j for j in order if not schema.features[j].protected][:MAX_REASONS]
    return chosen, protected


def reason_codes(values: np.ndarray, schema: FeatureSchema, row: Mapping[str, Any], *,
                 adverse: bool, reference: Mapping[str, Any] | None = None
                 ) -> list[tuple[str, str | None]]:
    """``(feature, reason code)`` of the principal reasons of one row's values (one per
    schema feature, toward the explained outcome), as :func:`principal_reasons` ranks and
    codes them, without their sentences: what a batch of many rows keeps per row. The
    codes are ``None`` for a favourable outcome."""
    chosen, _ = _ranked(np.asarray(values, dtype=np.float64), schema)
    return [(schema.features[j].name,
             _code_for(schema.features[j], row[schema.features[j].name], reference, adverse))
            for j in chosen]


def principal_reasons(explanation: Explanation, schema: FeatureSchema,
                      row: Mapping[str, Any], *, outcome: Mapping[str, str] | str,
                      adverse: bool = True, index: int = 0,
                      catalogue: ReasonCatalogue | None = None,
                      reference: Mapping[str, Any] | None = None) -> ReasonSet:
    """At most four ranked reasons for the explained outcome of row ``index``.

    ``explanation`` must hold one value per schema feature (grouped), explaining the
    output of the outcome given (positive values pushed toward it). ``outcome`` names
    it, per locale or as one string. ``adverse`` says whether it is an adverse outcome
    (reasons carry adverse-action codes) or a favourable one (reasons say what helped, with
    no code). ``reference`` (the baseline row the attributions are measured against) lets
    each sentence say on which side of it the value lies, and decides whether a code's text
    is true of the value (``FeatureSpec.adverse_code``).
    """
    values = _checked(explanation, schema, row, index)
    names = _outcome_names(outcome)
    catalogue = catalogue or load_catalogue()
    total = float(values.clip(min=0).sum())
    direction: Direction = "adverse" if adverse else "favourable"
    reasons: list[Reason] = []
    chosen, protected = _ranked(values, schema)
    for j in chosen:
        spec = schema.features[j]
        value = row[spec.name]
        code = _code_for(spec, value, reference, adverse)
        reasons.append(Reason(
            rank=len(reasons) + 1, feature=spec.name, reason_code=code,
            contribution=float(values[j]),
            impact=_impact(float(values[j]) / total if total else 0.0),
            text=_texts(schema, spec, value, code, names, reference, catalogue, adverse),
            direction=direction))
    return ReasonSet(outcome=names["en"], reasons=tuple(reasons),
                     protected_weighed=tuple(protected), catalogue_version=catalogue.version,
                     adverse=adverse)


def check_reasons(reasons: ReasonSet | Mapping[str, Any], explanation: Explanation,
                  schema: FeatureSchema, row: Mapping[str, Any], *,
                  outcome: Mapping[str, str] | str, index: int = 0,
                  catalogue: ReasonCatalogue | None = None,
                  reference: Mapping[str, Any] | None = None) -> list[str]:
    """Every statement of ``reasons`` that the explanation, the schema and the row do not
    bear out, as sentences naming the reason (an empty list: all true). The sentences
    name features and codes, never the person's values, so they may be logged.

    Checked for each reason: the feature exists, is not protected and appears once; its
    contribution is the explanation's value for it and pushed toward the stated outcome;
    the ranks follow the contributions; at most four; an adverse outcome's code is the one
    the schema says fits the person's value (never a code for a favourable outcome); the
    text gives the outcome, the person's own value, the catalogue text of the code, and
    the side of the reference the value lies on, in every locale. ``reasons`` is a
    :class:`ReasonSet` or its ``to_dict()`` (a stored report's reasons).
    """
    values = _checked(explanation, schema, row, index)
    names = _outcome_names(outcome)
    catalogue = catalogue or load_catalogue()
    got = reasons.to_dict() if isinstance(reasons, ReasonSet) else dict(reasons)
    adverse = bool(got.get("adverse", True))
    items = list(got.get("reasons", []))
    problems: list[str] = []
    if len(items) > MAX_REASONS:
        problems.append(f"{len(items)} reasons given; at most {MAX_REASONS} are allowed")
    seen: set[str] = set()
    previous = math.inf
    for k, item in enumerate(items, 1):
        feature = item.get("feature")
        where = f"reason {k} ({feature})"
        if feature not in schema.names:
            problems.append(f"{where}: not a feature of the schema")
            continue
        spec = schema.feature(feature)
        if feature in seen:
            problems.append(f"{where}: the feature is given twice")
        seen.add(feature)
        if spec.protected:
            problems.append(f"{where}: a protected feature is never a reason")
        if item.get("rank") != k:
            problems.append(f"{where}: rank {item.get('rank')} out of order")
        value = float(values[schema.names.index(feature)])
        stated = float(item.get("contribution", math.nan))
        if not math.isclose(stated, value, rel_tol=1e-9, abs_tol=1e-12):
            problems.append(f"{where}: contribution {stated:g} differs from the "
                            f"explanation's {value:g}")
        if not value > 0:
            problems.append(f"{where}: it pushed away from \"{names['en']}\" "
                            f"({value:g}), so it is no reason for it")
        if value > previous:
            problems.append(f"{where}: ranked below a smaller contribution")
        previous = value
        direction = "adverse" if adverse else "favourable"
        if item.get("direction", "adverse") != direction:
            problems.append(f"{where}: direction {item.get('direction')!r} for an "
                            f"{'adverse' if adverse else 'favourable'} outcome")
        expected = _code_for(spec, row[feature], reference, adverse)
        if item.get("reason_code") != expected:
            problems.append(f"{where}: code {item.get('reason_code')!r} does not fit the "
                            f"person's value (expected {expected!r})")
        want = _texts(schema, spec, row[feature], expected, names, reference, catalogue,
                      adverse)
        text = item.get("text", {})
        for loc in LOCALES:
            if text.get(loc) != want[loc]:
                problems.append(f"{where}: the {loc} text does not state the value, side "
                                f"and code the data give")
    return problems
