"""What a served model is for and how its decisions are explained.

A model's *spec* is stored with its registration (and committed to in the audit log):
where to load it from, its card (purpose, training data, validation status, data
sources, the regimes that apply) and its explanation policy.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from xai_sandbox.errors import InvalidInputError, known_fields, number_in
from xai_sandbox.explainers import EXPLAINERS
from xai_sandbox.models.schema import LOCALES
from xai_sandbox.quality.assess import QualityThresholds

__all__ = ["EXPENSIVE_METHODS", "ExplanationPolicy", "ModelCard"]

# Methods that run as jobs rather than inside the request (seconds, not milliseconds).
EXPENSIVE_METHODS = frozenset({"exact_shapley", "kernel_shap", "lime", "occlusion",
                               "owen_shapley", "permutation_shap", "smoothgrad"})
PolicyMode = Literal["always", "below_confidence", "sampled"]


def _labels(raw: Any, path: str) -> dict[str, dict[str, str]]:
    if not isinstance(raw, Mapping):
        raise InvalidInputError(path, "must map each class to its label per locale", raw)
    out: dict[str, dict[str, str]] = {}
    for cls, names in raw.items():
        if not isinstance(names, Mapping) or not all(
                isinstance(names.get(loc), str) and names.get(loc) for loc in ("en", "zh")):
            raise InvalidInputError(f"{path}.{cls}", "must give a label for 'en' and 'zh'",
                                    names)
        out[str(cls)] = {str(k): str(v) for k, v in names.items()}
    return out


@dataclass(frozen=True)
class ExplanationPolicy:
    """When and how a model's decisions are explained.

    ``mode``: ``always``; ``below_confidence`` (only decisions whose confidence is under
    ``confidence_threshold``); or ``sampled`` (a share of decisions, chosen by the
    decision id's hash, so the choice can be re-derived by an auditor). Adverse decisions
    are always explained: Regulation B and GDPR Art. 22 ask for their reasons.
    ``methods`` run in the request unless one is expensive (or ``run_as_job``), then all
    run as a job. The first method gives the principal reasons. ``quality``: the
    thresholds every explanation's quality block is judged by; with ``action: withhold``
    an explanation that fails them is not shown and the decision goes to human review.
    """

    methods: tuple[str, ...]
    adverse_class: str
    outcome_labels: Mapping[str, Mapping[str, str]]
    mode: PolicyMode = "always"
    confidence_threshold: float = 0.9
    share: float = 1.0
    threshold: float = 0.5
    counterfactuals: int = 3
    # Per feature, the largest relative change a suggestion may make (0.5: +-50%); the
    # rest get the counterfactual search's default.
    counterfactual_max_change: Mapping[str, float] = field(default_factory=dict)
    run_as_job: bool = False
    automation: str = "solely automated, with human review on request"
    version: str = "1"
    quality: QualityThresholds = field(default_factory=QualityThresholds)

    @classmethod
    def from_dict(cls, raw: Any, class_names: tuple[str, ...]) -> ExplanationPolicy:
        raw = known_fields(raw, cls.__dataclass_fields__, "policy")
        methods = raw.get("methods")
        if (not isinstance(methods, list | tuple) or not methods
                or not all(isinstance(m, str) for m in methods)):
            raise InvalidInputError("policy.methods", "must be a non-empty list of method "
                                    "names", methods)
        names = set(EXPLAINERS)
        for m in methods:
            if m not in names:
                raise InvalidInputError("policy.methods", f"must name methods of "
                                        f"{sorted(names)}", m)
        if raw.get("adverse_class") not in class_names:
            raise InvalidInputError("policy.adverse_class", f"must be one of "
                                    f"{list(class_names)}", raw.get("adverse_class"))
        labels = _labels(raw.get("outcome_labels"), "policy.outcome_labels")
        if set(labels) != set(class_names):
            raise InvalidInputError("policy.outcome_labels", f"must label every class "
                                    f"{list(class_names)}", sorted(labels))
        mode = raw.get("mode", "always")
        if mode not in ("always", "below_confidence", "sampled"):
            raise InvalidInputError("policy.mode", "must be 'always', 'below_confidence' or "
                                    "'sampled'", mode)
        for name in ("confidence_threshold", "share", "threshold"):
            number_in(raw.get(name, getattr(cls, name)), 0, 1, f"policy.{name}")
        k = number_in(raw.get("counterfactuals", 3), 0, 10, "policy.counterfactuals",
                      integer=True)
        run_as_job = raw.get("run_as_job", False)
        if not isinstance(run_as_job, bool):
            raise InvalidInputError("policy.run_as_job", "must be true or false", run_as_job)
        caps = raw.get("counterfactual_max_change") or {}
        if not isinstance(caps, Mapping):
            raise InvalidInputError("policy.counterfactual_max_change", "must map feature "
                                    "names to relative changes", caps)
        caps = {str(f): float(number_in(v, 0, 100, f"policy.counterfactual_max_change.{f}"))
                for f, v in caps.items()}
        for name in ("automation", "version"):
            value = raw.get(name, getattr(cls, name))
            if not isinstance(value, str) or not value or len(value) > 200:
                raise InvalidInputError(f"policy.{name}", "must be a non-empty string of at "
                                        "most 200 characters", value)
        return cls(methods=tuple(methods), adverse_class=raw["adverse_class"],
                   outcome_labels=labels, mode=mode,
                   confidence_threshold=float(raw.get("confidence_threshold", 0.9)),
                   share=float(raw.get("share", 1.0)), threshold=float(raw.get("threshold",
                                                                               0.5)),
                   counterfactuals=k, counterfactual_max_change=caps,
                   run_as_job=run_as_job,
                   automation=raw.get("automation", cls.automation),
                   version=raw.get("version", cls.version),
                   quality=QualityThresholds.from_dict(raw.get("quality")))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["methods"] = list(self.methods)
        out["outcome_labels"] = {k: dict(v) for k, v in self.outcome_labels.items()}
        out["quality"] = self.quality.to_dict()
        out["counterfactual_max_change"] = dict(self.counterfactual_max_change)
        return out

    @property
    def deferred(self) -> bool:
        """Whether explanations run as jobs."""
        return self.run_as_job or any(m in EXPENSIVE_METHODS for m in self.methods)

    def explains(self, *, adverse: bool, confidence: float, decision_id: str) -> bool:
        """Whether this decision is explained."""
        if adverse or self.mode == "always":
            return True
        if self.mode == "below_confidence":
            return confidence < self.confidence_threshold
        draw = int.from_bytes(hashlib.sha256(decision_id.encode()).digest()[:8], "big")
        return draw / 2**64 < self.share


@dataclass(frozen=True)
class ModelCard:
    """What a regulator asks of a model in the inventory (SR 26-2, AI Act Art. 13)."""

    purpose: str = "not stated"
    training_data: str = "not stated"
    validation_status: str = "not validated"
    data_sources: tuple[str, ...] = ()   # in English; per locale: data_source_texts
    data_source_texts: tuple[Mapping[str, str], ...] = ()
    regimes: tuple[str, ...] = ()
    known_limits: tuple[str, ...] = ()
    extra: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: Any) -> ModelCard:
        if raw is None:
            return cls()
        raw = known_fields(raw, cls.__dataclass_fields__, "card")
        out: dict[str, Any] = {}
        for name in ("purpose", "training_data", "validation_status"):
            value = raw.get(name, getattr(cls, name))
            if not isinstance(value, str) or not value or len(value) > 1000:
                raise InvalidInputError(f"card.{name}", "must be a non-empty string of at most "
                                        "1000 characters", value)
            out[name] = value
        # A data source is one text, or a text per locale (what the subject reads).
        sources = raw.get("data_sources", [])
        texts = []
        for i, item in enumerate(sources if isinstance(sources, list | tuple) else [sources]):
            text = {loc: item for loc in LOCALES} if isinstance(item, str) else item
            if not isinstance(text, Mapping) or not all(
                    isinstance(text.get(loc), str) and 0 < len(text[loc]) <= 500
                    for loc in LOCALES):
                raise InvalidInputError(f"card.data_sources[{i}]", "must be a string or a "
                                        f"text for every locale {list(LOCALES)}", item)
            texts.append({loc: str(text[loc]) for loc in LOCALES})
        out["data_sources"] = tuple(t["en"] for t in texts)
        out["data_source_texts"] = tuple(texts)
        for name in ("regimes", "known_limits"):
            value = raw.get(name, [])
            if not isinstance(value, list | tuple) or not all(
                    isinstance(v, str) and 0 < len(v) <= 500 for v in value):
                raise InvalidInputError(f"card.{name}", "must be a list of strings", value)
            out[name] = tuple(value)
        return cls(**out)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for name in ("data_sources", "regimes", "known_limits"):
            out[name] = list(out[name])
        out["data_sources"] = [dict(t) for t in self.data_source_texts] or out["data_sources"]
        del out["data_source_texts"]
        out["extra"] = dict(self.extra)
        return out
