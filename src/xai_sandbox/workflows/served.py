"""Loading and serving registered models: where a model spec's source is read from
(a built-in model or an XGBoost JSON document with its schema), and what is served.

A :class:`ServedModel` is a registered model with its card, explanation policy, the stored
spec it was registered from and, where known, its encoded training rows (for the
counterfactuals' limits and the proxy tests).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xai_sandbox.demos.catalog import BUILTIN_MODELS
from xai_sandbox.demos.credit import credit_models
from xai_sandbox.errors import InvalidInputError, UnsupportedModelError
from xai_sandbox.explainers.base import methods_of
from xai_sandbox.models.profile import TrainingProfile, fit_profile
from xai_sandbox.models.registry import RegisteredModel, register
from xai_sandbox.models.schema import FeatureSchema
from xai_sandbox.reports.policy import ExplanationPolicy, ModelCard
from xai_sandbox.semantics.anchors import AnchorLibrary

__all__ = ["DecisionOutcome", "ServedModel", "load_source"]


@dataclass(frozen=True)
class ServedModel:
    """A registered model with its card, explanation policy and stored spec."""

    key: str
    model: RegisteredModel
    policy: ExplanationPolicy
    card: ModelCard
    spec: Mapping[str, Any]
    data: np.ndarray | None = field(default=None, repr=False)   # encoded training rows
    anchors: AnchorLibrary | None = None
    proxies: Mapping[str, Sequence[str]] = field(default_factory=dict)  # protected -> proxies
    # The test behind each proxy: measure, value, threshold, permutation p-value.
    proxy_tests: Mapping[str, Sequence[Mapping[str, Any]]] = field(default_factory=dict)

    @property
    def schema(self) -> FeatureSchema:
        if self.model.schema is None:  # pragma: no cover - served models have schemas
            raise UnsupportedModelError("model", "needs a feature schema", self.key)
        return self.model.schema

    def summary(self) -> dict[str, Any]:
        return {"model_id": self.model.model_id, "version": self.model.version,
                "key": self.key, "fingerprint": self.model.fingerprint,
                "task": self.model.task, "class_names": list(self.model.class_names),
                "features": list(self.schema.names), "schema_version": self.schema.version,
                "policy": self.policy.to_dict(), "card": self.card.to_dict(),
                "anchors": self.anchors.to_dict() if self.anchors is not None else None,
                "source": self.spec["source"].get("kind", "builtin"),
                "format": self.spec["source"].get("format"),
                "notes": list(self.spec["source"].get("notes", ())),
                "methods": self.methods()}

    def methods(self) -> dict[str, str]:
        """Each tabular method and whether it runs on this model: ``"available"``, or why
        not (the model has no gradients, is not a tree ensemble, ...)."""
        out = {}
        for name, cls in sorted(methods_of("array").items()):
            if "tabular" not in cls.input_kinds:
                continue
            try:
                # check() reads the class's requirements only: no parameters needed.
                cls.check(object.__new__(cls), self.model.adapter)
            except (UnsupportedModelError, InvalidInputError) as exc:
                out[name] = str(exc)
            else:
                out[name] = "available"
        return out


@dataclass(frozen=True)
class DecisionOutcome:
    decision_id: str
    case_ref: str
    model_key: str
    output: Mapping[str, Any]
    leaf_index: int
    explained: bool
    report_id: str | None
    job_id: str | None



def _profile_to_dict(p: TrainingProfile) -> dict[str, Any]:
    return {"mean": p.mean.tolist(), "scale": p.scale.tolist(), "low": p.low.tolist(),
            "high": p.high.tolist(), "precision": p.precision.tolist(),
            "threshold": p.threshold, "columns": list(p.columns or ())}


def _profile_from_dict(d: Mapping[str, Any]) -> TrainingProfile:
    return TrainingProfile(mean=np.asarray(d["mean"]), scale=np.asarray(d["scale"]),
                           low=np.asarray(d["low"]), high=np.asarray(d["high"]),
                           precision=np.asarray(d["precision"]), threshold=d["threshold"],
                           columns=tuple(d["columns"]) or None)


def load_source(source: Mapping[str, Any], model_id: str, version: str
                 ) -> tuple[RegisteredModel, np.ndarray | None, dict[str, Any]]:
    """The model a spec's source names; returns it, its training rows (if known) and the
    source as it is to be stored."""
    kind = source.get("kind")
    if kind == "builtin":
        name = source.get("name")
        if name not in BUILTIN_MODELS or name == "efficientnet-lite0":
            raise InvalidInputError("source.name", "must be a built-in tabular model "
                                    f"{[n for n in BUILTIN_MODELS if n != 'efficientnet-lite0']}",
                                    name)
        credit = credit_models()
        base = credit.mlp if name == "german-credit-mlp" else credit.lightgbm
        model = RegisteredModel(model_id=model_id, version=version, adapter=base.adapter,
                                task=base.task, class_names=base.class_names,
                                fingerprint=base.fingerprint, schema=base.schema,
                                reference=base.reference, background=base.background,
                                profile=base.profile)
        return model, credit.data.X[credit.train], {"kind": "builtin", "name": name}
    if kind == "xgboost_json":
        return load_xgboost_json(source, model_id, version)
    raise InvalidInputError("source.kind", "must be 'builtin', 'xgboost_json' or 'file' (a "
                            "model file uploaded as multipart)", kind)


def load_xgboost_json(source: Mapping[str, Any], model_id: str, version: str
                  ) -> tuple[RegisteredModel, np.ndarray | None, dict[str, Any]]:
    """An XGBoost classifier from its JSON model format (data, never code)."""
    import xgboost

    text = source.get("model")
    if not isinstance(text, str) or not text.strip().startswith("{"):
        raise InvalidInputError("source.model", "must be an XGBoost model in its JSON format",
                                str(text)[:40])
    schema = FeatureSchema.from_dict(source.get("schema"))
    class_names = source.get("class_names")
    if not isinstance(class_names, list) or len(class_names) < 2 or not all(
            isinstance(c, str) for c in class_names):
        raise InvalidInputError("source.class_names", "must list at least two class names",
                                class_names)
    est = xgboost.XGBClassifier()
    try:
        est.load_model(bytearray(text.encode()))
    except Exception as exc:  # xgboost raises its own XGBoostError on a bad document
        # The first line of xgboost's message, without its log prefix, source file or
        # native stack trace.
        first = re.sub(r"^\[[\d:]+\] \S+:\d+: ", "", (str(exc).splitlines() or [""])[0])
        raise InvalidInputError("source.model", f"is not a loadable XGBoost model ({first})",
                                text[:40]) from exc
    rows = source.get("training_rows")
    data = None
    stored: dict[str, Any] = {"kind": "xgboost_json", "model": text,
                              "schema": schema.to_dict(), "class_names": class_names}
    if rows is not None:
        if not isinstance(rows, list) or not 10 <= len(rows) <= 100_000:
            raise InvalidInputError("source.training_rows", "must list 10 to 100000 rows",
                                    type(rows).__name__)
        data = schema.encode(rows)
        stored["profile"] = _profile_to_dict(fit_profile(data, schema.columns))
        stored["reference"] = schema.decode(schema.reference_row(data)[None])[0]
    elif source.get("profile") is not None:
        stored["profile"] = source["profile"]
        stored["reference"] = source.get("reference")
    reference = stored.get("reference")
    ref = schema.encode(reference) if reference is not None else None
    model = register(est, model_id=model_id, version=version, class_names=class_names,
                     schema=schema, reference=ref)
    if "profile" in stored:
        model = RegisteredModel(**{**model.__dict__,
                                   "profile": _profile_from_dict(stored["profile"])})
    return model, data, stored
