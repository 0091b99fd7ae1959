"""One decision, end to end: validate, score, record, explain, translate, record the
report; and back out as the subject's view or the full report.

:class:`Decider` is what the service (and anyone embedding the library) calls. It holds
the served models and a :class:`~xai_sandbox.store.Store`; the explanation of a decision
is computed once, stored as canonical JSON and committed to in the audit log.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import secrets
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from xai_sandbox.audit.canonical import canonical_json
from xai_sandbox.counterfactuals import ActionConstraints
from xai_sandbox.counterfactuals.search import NO_FEASIBLE_CHANGE, find_counterfactuals
from xai_sandbox.errors import (
    ExplanationError,
    InvalidInputError,
    NotFoundError,
    SchemaError,
    UnsupportedModelError,
)
from xai_sandbox.explainers import explain
from xai_sandbox.explainers.explanation import Explanation, library_versions
from xai_sandbox.models.profile import TrainingProfile, fit_profile
from xai_sandbox.models.registry import RegisteredModel, register
from xai_sandbox.models.schema import LOCALES, FeatureSchema
from xai_sandbox.monitor.alerts import AnchorStreaks, parse_webhooks, raise_alert
from xai_sandbox.monitor.calibrate import latest_thresholds
from xai_sandbox.quality.assess import assessed
from xai_sandbox.reports.policy import ExplanationPolicy, ModelCard
from xai_sandbox.semantics.anchors import AnchorLibrary, AnchorMatch, align, load_anchors
from xai_sandbox.semantics.fairness import likely_proxies
from xai_sandbox.semantics.reasons import check_reasons, principal_reasons
from xai_sandbox.store.entries import rfc3339
from xai_sandbox.store.jobs import ClaimedJob, JobQueue
from xai_sandbox.store.store import Store

__all__ = ["REPORT_SCHEMA", "Decider", "DecisionOutcome", "ServedModel", "add_working_days"]

REPORT_SCHEMA = "xai-sandbox.report/1"
log = logging.getLogger("xai_sandbox.reports")
_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
STOCHASTIC_METHODS = frozenset({"kernel_shap", "lime", "smoothgrad"})

DISCLAIMER = {
    "en": "These are examples of changes that would have led the model to a different "
          "outcome. They are guidance, not a promise of approval: a new application is "
          "decided on its own facts.",
    "zh": "以下是会使模型得出不同结果的变化示例。它们仅供参考，并非批准承诺："
          "新的申请将根据其自身情况作出决定。",
}
CAVEAT_LOW = {
    "en": "Explanation reliability low: your application differs from the data the model "
          "learned from, so these reasons may describe the model less faithfully. You can "
          "ask for a human review.",
    "zh": "解释可靠性低：您的申请与模型学习所用的数据差异较大，这些理由可能不能准确反映模型。"
          "您可以申请人工复核。",
}
CAVEAT_QUALITY = {
    "en": "Explanation reliability low: our checks found that these reasons may not fully "
          "reflect how the model reached this decision. You can ask for a human review.",
    "zh": "解释可靠性低：我们的检查发现这些理由可能不能完全反映模型作出此决定的方式。"
          "您可以申请人工复核。",
}
CAVEAT_WITHHELD = {
    "en": "The automatic explanation of this decision did not pass our reliability checks, "
          "so it is not shown. A person is reviewing the decision and will explain it to "
          "you; the review and its due date are shown below.",
    "zh": "此决定的自动解释未通过我们的可靠性检查，因此不予显示。工作人员正在复核该决定，"
          "并将向您说明；复核状态及截止日期见下文。",
}
CAVEAT_OK = {
    "en": "These reasons are computed from the model that made the decision. They describe "
          "the model, not a judgement about you.",
    "zh": "这些理由由作出决定的模型计算得出，描述的是模型，而非对您个人的评价。",
}
RIGHTS = {
    "en": [("human_review", "You can ask for a person to review this decision."),
           ("contest", "You can express your point of view and contest the decision."),
           ("explanation", "You can ask for more detail about how the decision was made.")],
    "zh": [("human_review", "您可以要求由人工复核此决定。"),
           ("contest", "您可以陈述意见并对决定提出异议。"),
           ("explanation", "您可以要求进一步说明决定是如何作出的。")],
}
REVIEW_STATUS = {
    "en": {"not_required": "not requested", "pending": "pending", "confirmed": "confirmed",
           "overridden": "overridden", "reversed": "reversed"},
    "zh": {"not_required": "未申请", "pending": "处理中", "confirmed": "维持原决定",
           "overridden": "已改判", "reversed": "已撤销"},
}
IMPACT = {"en": {"HIGH": "high impact", "MEDIUM": "medium impact", "LOW": "low impact"},
          "zh": {"HIGH": "影响大", "MEDIUM": "影响中等", "LOW": "影响小"}}
# A person's review decides the outcome from then on: said to the subject with its date.
DECIDED_BY_PERSON = {
    "en": "Decided by a person on review on {date} ({status}); the automated decision was "
          "\"{original}\". The reasons below explain the automated decision.",
    "zh": "已于{date}经人工复核作出决定（{status}）；自动决定的结果为“{original}”。"
          "以下理由解释的是自动决定。",
}
CONFIRMED_BY_PERSON = {
    "en": "Confirmed by a person on review on {date}.",
    "zh": "已于{date}经人工复核维持。",
}
# Reviews that can change the outcome (an explanation request cannot).
DECIDING_KINDS = ("human_review", "contest")
DEFAULT_REGIMES = ("GDPR Art. 22 (solely automated decision with legal or similarly "
                   "significant effect); Art. 13-15 meaningful information",
                   "EU AI Act Annex III point 5(b) (creditworthiness), Art. 12, 13, 14, 86",
                   "US ECOA / Regulation B 12 CFR 1002.9 (adverse action notice)",
                   "China PIPL Art. 24 (automated decision-making)")


def add_working_days(start: datetime, days: int) -> datetime:
    """``start`` plus ``days`` working days (Monday to Friday)."""
    out = start
    left = days
    while left > 0:
        out += timedelta(days=1)
        if out.weekday() < 5:
            left -= 1
    return out


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
                "source": self.spec["source"].get("kind", "builtin")}


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


def _load_source(source: Mapping[str, Any], model_id: str, version: str
                 ) -> tuple[RegisteredModel, np.ndarray | None, dict[str, Any]]:
    """The model a spec's source names; returns it, its training rows (if known) and the
    source as it is to be stored."""
    kind = source.get("kind")
    if kind == "builtin":
        from xai_sandbox.demos.catalog import BUILTIN_MODELS

        name = source.get("name")
        if name not in BUILTIN_MODELS or name == "efficientnet-lite0":
            raise InvalidInputError("source.name", "must be a built-in tabular model "
                                    f"{[n for n in BUILTIN_MODELS if n != 'efficientnet-lite0']}",
                                    name)
        from xai_sandbox.demos.credit import credit_models

        credit = credit_models()
        base = credit.mlp if name == "german-credit-mlp" else credit.lightgbm
        model = RegisteredModel(model_id=model_id, version=version, adapter=base.adapter,
                                task=base.task, class_names=base.class_names,
                                fingerprint=base.fingerprint, schema=base.schema,
                                reference=base.reference, background=base.background,
                                profile=base.profile)
        return model, credit.data.X[credit.train], {"kind": "builtin", "name": name}
    if kind == "xgboost_json":
        return _load_xgboost(source, model_id, version)
    raise InvalidInputError("source.kind", "must be 'builtin' or 'xgboost_json'", kind)


def _load_xgboost(source: Mapping[str, Any], model_id: str, version: str
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


class Decider:
    """Decisions, their explanations and their reports, over one store."""

    def __init__(self, store: Store, *, review_sla_working_days: int | None = None) -> None:
        self.store = store
        self.settings = store.settings
        self.sla_days = review_sla_working_days or self.settings.review_sla_working_days
        self.jobs = JobQueue(store, lease_seconds=self.settings.job_lease_seconds)
        self.streaks = AnchorStreaks(self.settings.alert_streak)
        # (model, anchor) -> (decisions aligned, hits) in this process, for /metrics.
        self.anchor_counts: dict[tuple[str, str], tuple[int, int]] = {}
        self.webhooks = parse_webhooks(self.settings.webhooks)
        self._models: dict[str, ServedModel] = {}
        self._texts: dict[str, dict[str, dict[str, Any]]] = {}
        self._constraints: dict[str, ActionConstraints] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ models
    def register(self, spec: Mapping[str, Any]) -> ServedModel:
        """Load, register, record and serve a model from its spec.

        ``spec``: ``model_id``, ``version``, ``source`` (``{"kind": "builtin", "name":
        ...}`` or ``{"kind": "xgboost_json", "model": ..., "schema": ..., "class_names":
        ..., "training_rows": [...]}``), ``policy`` and optionally ``card``.
        """
        if not isinstance(spec, Mapping):
            raise InvalidInputError("spec", "must be a mapping", spec)
        model_id, version = str(spec.get("model_id")), str(spec.get("version", "1"))
        source = spec.get("source")
        if not isinstance(source, Mapping):
            raise InvalidInputError("source", "must be a mapping with a 'kind'", source)
        for name, value in (("model_id", spec.get("model_id")),
                            ("version", spec.get("version", "1"))):
            if not isinstance(value, str) or not _MODEL_ID.match(value):
                raise InvalidInputError(name, "must be 1-128 of letters, digits, '.', '_', "
                                        "'-'", value)
        model, data, stored_source = _load_source(source, model_id, version)
        policy = ExplanationPolicy.from_dict(spec.get("policy"), model.class_names)
        card = ModelCard.from_dict(spec.get("card"))
        anchors = None
        if spec.get("anchors") is not None:
            if not isinstance(spec["anchors"], str | Mapping):
                raise InvalidInputError("anchors", "must name a shipped anchor library or "
                                        "give one", spec["anchors"])
            anchors = load_anchors(spec["anchors"])
            if model.schema is not None:
                anchors.check_schema(model.schema)
            calibrated = latest_thresholds(self.store, f"{model_id}@{version}")
            if calibrated:
                anchors = anchors.with_thresholds(calibrated)
        stored = {"model_id": model_id, "version": version, "source": stored_source,
                  "policy": policy.to_dict(), "card": card.to_dict()}
        if anchors is not None:
            stored["anchors"] = spec["anchors"]
        key, _ = self.store.register_model(model_id, version, model.fingerprint,
                                           schema=model.schema.to_dict() if model.schema
                                           else None, spec=stored)
        proxies: dict[str, list[str]] = {}
        tests: dict[str, list[dict[str, Any]]] = {}
        if data is not None and model.schema is not None and len(data) >= 50:
            found = likely_proxies(model.schema, model.schema.decode(data[:5000]))
            proxies = {p: [n for n, _ in found[p]] for p in found}
            tests = {p: [f.to_dict() for f in found[p]] for p in found}
        served = ServedModel(key=key, model=model, policy=policy, card=card, spec=stored,
                             data=data, anchors=anchors, proxies=proxies, proxy_tests=tests)
        if anchors is not None:  # streaks continue across a restart
            for decision_id, body in self.store.recent_reports(key, self.streaks.n):
                if body.get("anchors"):
                    self.streaks.update(key, decision_id, body["anchors"]["matches"],
                                        replay=True)
        with self._lock:
            self._models[key] = served
        return served

    def load_registered(self) -> list[str]:
        """Serve again every model recorded with a spec (after a restart)."""
        loaded = []
        for row in self.store.models():
            if not row.get("spec_json") or row["key"] in self._models:
                continue
            spec = json.loads(row["spec_json"])
            served = self.register(spec)
            if served.model.fingerprint != row["fingerprint"]:  # pragma: no cover
                raise InvalidInputError("model", "reloads with another fingerprint", row["key"])
            loaded.append(row["key"])
        return loaded

    def models(self) -> list[ServedModel]:
        with self._lock:
            return list(self._models.values())

    def model(self, model_id: str, version: str | None = None) -> ServedModel:
        with self._lock:
            if version is not None:
                found = self._models.get(f"{model_id}@{version}")
            else:
                same = [m for m in self._models.values() if m.model.model_id == model_id]
                found = same[-1] if same else None
        if found is None:
            raise NotFoundError("model_id", "must be a registered model",
                                    model_id if version is None else f"{model_id}@{version}")
        return found

    def model_by_key(self, key: str) -> ServedModel:
        with self._lock:
            found = self._models.get(key)
        if found is None:
            raise NotFoundError("model_key", "must be a served model", key)
        return found

    # ------------------------------------------------------------------ decisions
    def score(self, served: ServedModel, features: Mapping[str, Any]
              ) -> tuple[np.ndarray, dict[str, Any]]:
        """Validate one applicant against the schema and score it."""
        if not isinstance(features, Mapping):
            raise SchemaError("features", "must be a mapping of feature name to value",
                              type(features).__name__)
        try:
            x = served.schema.encode(features)
        except SchemaError as exc:  # name the field as the caller sent it
            where = exc.parameter.replace("rows[0]", "features", 1)
            raise SchemaError(where, exc.rule, exc.value) from None
        probs = served.model.probabilities(x)[0]
        names = served.model.class_names
        policy = served.policy
        adverse_idx = names.index(policy.adverse_class)
        p_adverse = float(probs[adverse_idx])
        adverse = p_adverse >= policy.threshold
        if adverse:
            outcome = policy.adverse_class
        else:
            others = [i for i in np.argsort(-probs) if i != adverse_idx]
            outcome = names[int(others[0])]
        output = {"score": p_adverse, "score_meaning": f"probability of '{policy.adverse_class}'",
                  "decision": outcome, "label": dict(policy.outcome_labels[outcome]),
                  "adverse": adverse, "threshold": policy.threshold,
                  "confidence": float(probs[names.index(outcome)]),
                  "probabilities": {n: float(p) for n, p in zip(names, probs, strict=True)},
                  "policy_version": policy.version, "automation": policy.automation}
        return x, output

    def decide(self, *, model_id: str, subject_id: str, features: Mapping[str, Any],
               version: str | None = None, case_ref: str | None = None,
               explain_now: bool = True) -> DecisionOutcome:
        """Score, record and (by policy) explain one decision.

        The decision and its explanation job are recorded in one transaction. Cheap
        methods are run at once by the caller (``explain_now``); expensive ones are left
        to the job pool.
        """
        served = self.model(model_id, version)
        _, output = self.score(served, features)
        decision_id = str(uuid.uuid4())
        prepared = self.store.prepare_decision({
            "decision_id": decision_id, "model_key": served.key, "subject_id": subject_id,
            "inputs": dict(features), "output": output,
            "policy_version": served.policy.version, "case_ref": case_ref})
        explains = served.policy.explains(adverse=bool(output["adverse"]),
                                          confidence=float(output["confidence"]),
                                          decision_id=decision_id)
        methods = list(served.policy.methods) if explains else None
        report = None
        if methods and explain_now and not served.policy.deferred:
            try:
                report = self._report_body(prepared.row, features, methods)
            except Exception as exc:  # recorded with a job instead: retried, error kept
                # The type only: an error's message may quote the applicant's values.
                log.error("explaining decision %s failed (%s); queued as a job",
                          decision_id, type(exc).__name__)
        # The decision and its report (or its job) in one transaction.
        stored = self.store.record_prepared([prepared], reports=[report],
                                            jobs=[None if report is not None else methods],
                                            report_schema=REPORT_SCHEMA)[0]
        if report is not None:
            self.watch(served.key, decision_id, report)
        return DecisionOutcome(decision_id=stored.decision_id,
                               case_ref=prepared.row["case_ref"], model_key=served.key,
                               output=output, leaf_index=stored.leaf_index,
                               explained=methods is not None, report_id=stored.report_id,
                               job_id=stored.job_id)

    def run_job(self, job: ClaimedJob) -> str | None:
        """Explain a claimed job's decision and complete the job; returns the report id
        (``None`` if the job failed or was lost to another worker)."""
        from xai_sandbox.store.jobs import JobLostError

        try:
            report = self.explain_decision(job.decision_id, job.methods)
        except Exception as exc:  # recorded on the job; retried or failed by the queue
            self.jobs.fail(job, f"{type(exc).__name__}: {exc}")
            return None
        try:
            report_id, _ = self.jobs.complete(job, report, REPORT_SCHEMA)
        except JobLostError:
            return None
        self.watch(self.store.decision(job.decision_id)["model_key"], job.decision_id, report)
        return report_id

    def watch(self, model_key: str, decision_id: str, report: Mapping[str, Any]) -> list[str]:
        """Anchor-risk alerts: an anchor whose risk reached its threshold on ``n``
        consecutive decisions of a model raises one alert (stored, logged, sent to the
        webhooks). Returns the ids of the alerts raised."""
        anchors = report.get("anchors")
        if not anchors:
            return []
        with self._lock:
            for m in anchors["matches"]:
                key = (model_key, str(m["anchor"]))
                seen, hits = self.anchor_counts.get(key, (0, 0))
                self.anchor_counts[key] = (seen + 1, hits + int(bool(m["hit"])))
        raised = []
        for match, decisions in self.streaks.update(model_key, decision_id,
                                                    anchors["matches"]):
            body = {"title": f"{match['label']['en']}: risk at or above its threshold on "
                             f"{len(decisions)} consecutive decisions of {model_key}",
                    "model": model_key, "anchor": match["anchor"],
                    "label": match["label"]["en"], "rule": match["rule"],
                    "regulations": "; ".join(match["regulations"]),
                    "protected": match["protected"], "consecutive": len(decisions),
                    "decisions": decisions}
            alert_id = raise_alert(self.store, "anchor_risk", body,
                                   dedup_key=f"anchor_risk:{model_key}:{match['anchor']}",
                                   webhooks=self.webhooks)
            if alert_id is not None:
                raised.append(alert_id)
        return raised

    # ------------------------------------------------------------------ explanation
    def explain_decision(self, decision_id: str, methods: Sequence[str]) -> dict[str, Any]:
        """The stored part of a decision's report: everything computed once."""
        row = self.store.decision(decision_id)
        features = self.store.payload(decision_id)
        if features is None:
            raise InvalidInputError("decision_id", "has no input any more (erased)",
                                    decision_id)
        return self._report_body(row, features, methods)

    def _report_body(self, row: Mapping[str, Any], features: Mapping[str, Any],
                     methods: Sequence[str]) -> dict[str, Any]:
        decision_id = row["id"]
        served = self.model_by_key(row["model_key"])
        model, schema, policy = served.model, served.schema, served.policy
        output = json.loads(row["output_json"])
        x = schema.encode(features)
        target = output["decision"]
        seed = int.from_bytes(hashlib.sha256(decision_id.encode()).digest()[:4], "big")
        explanations: list[Explanation] = []
        for method in methods:
            explanations.append(explain(model, x, method=method, target=target,
                                        random_state=seed))
        primary = explanations[0]
        reference = (schema.decode(np.atleast_2d(model.reference))[0]
                     if model.reference is not None else None)
        outcome_label = policy.outcome_labels[target]
        reasons = principal_reasons(primary, schema, features, outcome=outcome_label,
                                    adverse=bool(output["adverse"]), reference=reference)
        # Every reason re-derived from the explanation, the schema and the input; a false
        # statement blocks the report from the subject (a person reviews it instead).
        violations = check_reasons(reasons, primary, schema, features, outcome=outcome_label,
                                   reference=reference)
        if violations:
            log.error("decision %s: %d principal reasons failed the truth check: %s",
                      decision_id, len(violations), "; ".join(violations))
        counterfactuals = self._counterfactuals(served, features, output)
        # Stochastic methods again with another seed: stability, and anchor confidence.
        reruns = [explain(model, x, method=e.method, target=target, random_state=seed + 1)
                  for e in explanations if e.method in STOCHASTIC_METHODS]
        explanations, quality = assessed(model, x, explanations, reruns=reruns,
                                         thresholds=policy.quality)
        reliability = self._reliability(served, x, output, explanations, quality)
        if violations:
            reliability.update(level="low", shown=False, why_low=[
                *reliability["why_low"], "principal reasons failed the truth check"])
        matches = (align([*explanations, *reruns], served.anchors, row=features)
                   if served.anchors is not None else None)
        explained_at = datetime.now(UTC)
        body: dict[str, Any] = {
            "schema_version": REPORT_SCHEMA,
            "decision": {"decision_id": decision_id, "case_ref": row["case_ref"],
                         "subject_ref": row["subject_ref"],
                         "decided_at": rfc3339(row["decided_at"]),
                         "explained_at": rfc3339(explained_at)},
            "parties": {"deployer": {"name": self.settings.deployer_name,
                                     "contact": self.settings.deployer_contact},
                        "provider": {"name": self.settings.provider_name,
                                     "contact": self.settings.provider_contact}},
            "model": {"model_id": model.model_id, "version": model.version,
                      "fingerprint_sha256": model.fingerprint,
                      "training_data": served.card.training_data,
                      "purpose": served.card.purpose,
                      "validation_status": served.card.validation_status},
            "input": {"commitment": row["input_commitment"],
                      "commitment_scheme": "SHA-256(salt || RFC 8785 JSON of the input)",
                      "schema_version": schema.version,
                      "data_sources": list(served.card.data_sources),
                      "data_sources_by_locale": {
                          loc: [t[loc] for t in served.card.data_source_texts]
                          for loc in LOCALES}},
            "output": output,
            "explanations": [self._method_block(e) for e in explanations],
            "reasons": {**reasons.to_dict(), "check": {"passed": not violations,
                                                       "violations": violations}},
            "counterfactuals": counterfactuals,
            "reliability": reliability,
            "quality": quality,
            "regimes": list(served.card.regimes or DEFAULT_REGIMES),
            "provenance": self._provenance(row, served, explanations, reasons.catalogue_version,
                                           matches),
            "fairness": self._fairness(served, explanations[0]),
        }
        if not reliability["shown"]:
            # Not shown to the subject: a person reviews the decision instead, opened in
            # the transaction that stores this report.
            due = add_working_days(explained_at, self.sla_days)
            gate = "reason_check" if violations else "quality_gate"
            why = violations if violations else quality["verdict"]["why"]
            body["review_required"] = {
                "kind": "human_review", "channel": gate,
                "requested_by": f"system:{'reason-check' if violations else 'explanation-quality'}",
                "due_at": rfc3339(due),
                "reason": ("principal reasons failed the truth check: " if violations else
                           "explanation not reliable enough to show: ") + "; ".join(why)}
        if matches is not None and served.anchors is not None:
            body["anchors"] = {"library": served.anchors.version,
                               "matches": [m.to_dict() for m in matches],
                               "hits": [m.anchor for m in matches if m.hit]}
        subject = {loc: self._subject_text(body, loc) for loc in LOCALES}
        body["subject_text"] = {loc: {"sha256": hashlib.sha256(canonical_json(v)).hexdigest()}
                                for loc, v in subject.items()}
        body["notices"] = ({"adverse_action_notice": {
            "date": rfc3339(explained_at), "channel": "subject view",
            "content_sha256": body["subject_text"]}} if output["adverse"] else {})
        return body

    @staticmethod
    def _method_block(e: Explanation) -> dict[str, Any]:
        if not e.assessed or e.quality is None:
            # Never served without its quality block (see quality.assess.assessed).
            raise ExplanationError("explanation", "must be assessed before it is served",
                                   e.method)
        names = e.feature_names or tuple(str(i) for i in range(e.values.shape[1]))
        baseline = e.baseline
        own = dict(e.quality.get("methods", {}).get(e.method) or {})
        return {"method": e.method, "parameters": dict(e.parameters),
                "quality": {"assessed": True, "checks": own,
                            "verdict": dict(e.quality.get("verdict") or {})},
                "library_versions": dict(e.library_versions), "seed": e.seed,
                "baseline_sha256": hashlib.sha256(np.ascontiguousarray(
                    baseline, dtype=np.float64).tobytes()).hexdigest()
                if baseline is not None else None,
                "output_space": e.output_space,
                "expected_value": float(np.ravel(e.expected_value)[0])
                if e.expected_value is not None else None,
                "completeness_error": e.completeness_error,
                "wall_time_s": e.wall_time_s,
                "attributions": {n: float(v) for n, v in zip(names, e.values[0], strict=True)}}

    def _counterfactuals(self, served: ServedModel, features: Mapping[str, Any],
                         output: Mapping[str, Any]) -> dict[str, Any]:
        k = served.policy.counterfactuals
        if not output["adverse"] or k == 0:
            return {"requested": False, "options": [],
                    "message": "not adverse: no change needed" if k else "disabled by policy"}
        favourable = [c for c in served.model.class_names if c != served.policy.adverse_class]
        probs = output["probabilities"]
        desired = max(favourable, key=lambda c: probs[c])
        adverse = served.model.class_index(served.policy.adverse_class)
        threshold = served.policy.threshold
        found = find_counterfactuals(
            served.model, features, desired_class=desired, k=k,
            constraints=self._action_constraints(served),
            # The policy decides, not the most probable class: below the threshold.
            reaches=lambda p: p[:, adverse] < threshold)
        schema = served.schema
        options = []
        for rank, option in enumerate(found.options, 1):
            # Re-score the changed applicant through the same path as a decision.
            _, rescored = self.score(served, option.row)
            options.append({
                "rank": rank, "cost": option.cost, "probability_desired": option.probability,
                "ood_score": option.ood_score,
                "neighbour_distance": option.neighbour_distance,
                "valid": rescored["decision"] == desired,
                "rescored_decision": rescored["decision"],
                "changes": [{"feature": c.feature, "before": c.before, "after": c.after,
                             "display": {loc: {
                                 "feature": schema.display_name(c.feature, loc),
                                 "before": schema.display_value(c.feature, c.before, loc),
                                 "after": schema.display_value(c.feature, c.after, loc)}
                                 for loc in LOCALES}}
                            for c in option.changes]})
        return {"requested": True, "desired_class": desired, "options": options,
                "message": found.message if found.found else NO_FEASIBLE_CHANGE,
                "original_ood_score": found.original_ood_score,
                "dropped": dict(found.dropped),
                "constraints": {**dict(found.constraints),
                                "never_changed": [f.name for f in schema.features
                                                  if f.protected or not f.mutable]},
                "disclaimer": DISCLAIMER}

    def _action_constraints(self, served: ServedModel) -> ActionConstraints | None:
        """What a suggested change may do, from the model's training rows (built once per
        model): within their 1st-99th percentiles and the policy's relative caps, up the
        schema's category orders, and no further from the data than the OOD limit."""
        if served.data is None:
            return None
        with self._lock:
            found = self._constraints.get(served.key)
        if found is None:
            found = ActionConstraints.from_training(
                served.data, served.schema, profile=served.model.profile,
                max_relative_change=dict(served.policy.counterfactual_max_change) or None)
            with self._lock:
                self._constraints[served.key] = found
        return found

    def _reliability(self, served: ServedModel, x: np.ndarray, output: Mapping[str, Any],
                     explanations: Sequence[Explanation], quality: Mapping[str, Any]
                     ) -> dict[str, Any]:
        """COMPLIANCE.md field 10, from the training profile and the quality block."""
        model = served.model
        ood = model.profile.assess(x)[0].to_dict() if model.profile is not None else None
        fidelity = {e.method: e.completeness_error for e in explanations}
        stability: dict[str, Any] = {}
        for method, block in quality["methods"].items():
            seeds = block.get("seed_stability")
            stability[method] = ({"deterministic": False, "seeds": seeds["seeds"],
                                  "spearman": seeds["spearman"],
                                  "kendall": seeds["kendall"]}
                                 if seeds is not None else {"deterministic": True})
        reasons: list[str] = []
        if ood is not None and ood["out_of_distribution"]:
            reasons.append("input far from the training data (out of distribution)")
        reasons += quality["verdict"]["why"]
        # "normal" only for a validated explanation: its faithfulness was measured.
        principal = quality.get("methods", {}).get(quality.get("principal"), {})
        if (principal.get("curves") or {}).get("gap") is None:
            reasons.append("explanation not validated: its faithfulness (deletion/insertion "
                           "gap) could not be measured")
        return {"model_confidence": output["confidence"], "fidelity": fidelity,
                "stability": stability, "out_of_distribution": ood,
                "level": "low" if reasons else "normal", "why_low": reasons,
                "shown": quality["verdict"]["action"] != "withhold",
                "known_limits": list(served.card.known_limits)}

    @staticmethod
    def _fairness(served: ServedModel, explanation: Explanation) -> dict[str, Any]:
        """The share of the attribution on protected features (and, by name, on each), and
        on their likely proxies (features associated with them in the training data)."""
        values = np.abs(np.asarray(explanation.values[0], dtype=np.float64))
        total = float(values.sum())
        names = list(explanation.feature_names or ())

        def share(name: str) -> float:
            return float(values[names.index(name)]) / total if total and name in names \
                else 0.0

        shares = {f.name: share(f.name) for f in served.schema.features
                  if f.protected and f.name in names}
        proxies = sorted({p for group in served.proxies.values() for p in group})
        return {"protected_share": float(sum(shares.values())), "by_feature": shares,
                "proxy_share": float(sum(share(p) for p in proxies)),
                "proxies": {k: list(v) for k, v in served.proxies.items()},
                "proxy_tests": {k: [dict(t) for t in v] for k, v in served.proxy_tests.items()},
                "method": explanation.method}

    @staticmethod
    def _provenance(row: Mapping[str, Any], served: ServedModel,
                    explanations: Sequence[Explanation], catalogue: str,
                    matches: Sequence[AnchorMatch] | None = None) -> list[dict[str, Any]]:
        """input -> layer activations -> gradient weighting -> anchor match -> regulatory
        rule -> hash: each link names what it used, so the chain can be re-walked."""
        adapter = served.model.adapter
        layers = ("not applicable: " + type(getattr(adapter, "estimator", adapter)).__name__
                  + " has no layers (tree ensemble or estimator)"
                  if adapter.framework != "torch" else
                  "; ".join(f"{name}: {type(m).__name__}" for name, m in
                            adapter.module.named_modules() if name))  # type: ignore[attr-defined]
        chain = [
            {"step": "input", "detail": f"commitment {row['input_commitment']}, schema "
                                        f"{served.schema.version}"},
            {"step": "layer activations", "detail": layers},
            {"step": "gradient weighting",
             "detail": "; ".join(f"{e.method} ({e.output_space or 'output'}, "
                                 f"completeness error {e.completeness_error})"
                                 for e in explanations)},
            {"step": "anchor match", "detail": "; ".join(
                f"{m.anchor} sensitivity {m.sensitivity:.3f} risk {m.risk:.2f}"
                f"{' HIT' if m.hit else ''}" for m in matches)
             if matches else "feature schema reason codes (no semantic anchors registered "
                             "for this model)"},
            {"step": "regulatory rule", "detail": f"Regulation B 12 CFR 1002.9(b)(2): at most "
                                                  f"four principal reasons, catalogue "
                                                  f"{catalogue}; protected features excluded"},
        ]
        digest = hashlib.sha256(canonical_json(chain) + b"".join(
            canonical_json(e.to_dict()) for e in explanations)).hexdigest()
        chain.append({"step": "hash", "detail": digest})
        return chain

    # ------------------------------------------------------------------ reading
    @staticmethod
    def final_outcome(served: ServedModel, output: Mapping[str, Any],
                      reviews: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """The outcome that stands: the model's, or the latest decided human review or
        contest's. ``overridden`` and ``reversed`` turn an adverse decision into the most
        probable favourable class, and a favourable one into the adverse class; the log
        holds both the automated decision and the review that changed it."""
        decided = [r for r in reviews if (r["kind"] or "human_review") in DECIDING_KINDS
                   and r["status"] in ("confirmed", "overridden", "reversed")]
        original = {"decision": output["decision"], "label": dict(output["label"]),
                    "adverse": bool(output["adverse"])}
        if not decided:
            return {**original, "decided_by": "model", "decided_at": None,
                    "review_status": None, "review_id": None, "original": original}
        last = max(decided, key=lambda r: r["decided_at"])
        decision, adverse = original["decision"], original["adverse"]
        if last["status"] != "confirmed":
            policy = served.policy
            if adverse:
                probs = output.get("probabilities") or {}
                others = [c for c in served.model.class_names if c != policy.adverse_class]
                decision = max(others, key=lambda c: float(probs.get(c, 0.0)))
            else:
                decision = policy.adverse_class
            adverse = not adverse
        return {"decision": decision, "label": dict(served.policy.outcome_labels[decision]),
                "adverse": adverse, "decided_by": "person",
                "decided_at": rfc3339(last["decided_at"]), "review_status": last["status"],
                "review_id": last["id"], "original": original}

    def _subject_text(self, body: Mapping[str, Any], locale: str) -> dict[str, Any]:
        """The words the subject reads (the adverse-action notice), without live state."""
        reasons = [{"rank": r["rank"], "impact": r["impact"],
                    "impact_text": IMPACT[locale][r["impact"]], "text": r["text"][locale]}
                   for r in body["reasons"]["reasons"]]
        cf = body["counterfactuals"]
        changes = []
        for option in cf.get("options", []):
            if not option["valid"]:
                continue
            parts = [f"{c['display'][locale]['feature']}: {c['display'][locale]['before']} → "
                     f"{c['display'][locale]['after']}" for c in option["changes"]]
            changes.append({"rank": option["rank"], "changes": parts})
        reliability = body["reliability"]
        low = reliability["level"] == "low"
        shown = reliability.get("shown", True)
        ood = reliability.get("out_of_distribution") or {}
        caveat = (CAVEAT_WITHHELD if not shown else CAVEAT_LOW if ood.get(
            "out_of_distribution") else CAVEAT_QUALITY if low else CAVEAT_OK)[locale]
        if not shown:
            reasons = []
        return {"outcome": body["output"]["label"][locale], "reasons": reasons,
                "what_you_could_change": {
                    "options": changes,
                    "message": ({"en": "No feasible change found that would lead to a "
                                       "different outcome.",
                                 "zh": "未找到可行的、能改变结果的调整。"}[locale]
                                if cf.get("requested") and not changes else None),
                    "disclaimer": DISCLAIMER[locale] if cf.get("requested") else None},
                "caveat": caveat,
                "reliability": "withheld" if not shown else "low" if low else "normal"}

    def subject_view(self, decision_id: str, locale: str, review_link: str,
                     subject_ref: str | None = None) -> dict[str, Any]:
        """What the person decided about reads: no raw numbers, at most four reasons.

        With ``subject_ref``, a decision of anyone else is reported as not found (the same
        answer as an unknown id, so ids cannot be probed)."""
        if locale not in LOCALES:
            raise InvalidInputError("locale", f"must be one of {list(LOCALES)}", locale)
        row, report_id, reviews = self.store.decision_with_report(decision_id)
        if subject_ref is not None and row["subject_ref"] != subject_ref:
            raise NotFoundError("decision_id", "must be a recorded decision", decision_id)
        texts = self._subject_texts(report_id) if report_id is not None else None
        output = json.loads(row["output_json"])
        final = self.final_outcome(self.model_by_key(row["model_key"]), output, reviews)
        note = None
        if final["decided_by"] == "person":
            status = REVIEW_STATUS[locale][final["review_status"]]
            date = final["decided_at"][:10]
            note = (CONFIRMED_BY_PERSON[locale].format(date=date)
                    if final["review_status"] == "confirmed" else
                    DECIDED_BY_PERSON[locale].format(date=date, status=status,
                                                     original=output["label"][locale]))
        view: dict[str, Any] = {
            "decision_id": decision_id, "case_ref": row["case_ref"],
            "decided_at": rfc3339(row["decided_at"]), "locale": locale,
            "outcome": final["label"][locale],
            "outcome_decided_by": final["decided_by"],
            "outcome_decided_at": final["decided_at"] or rfc3339(row["decided_at"]),
            "automated_outcome": output["label"][locale], "outcome_note": note,
            "deployer": {"name": self._deployer_name(locale),
                         "contact": self.settings.deployer_contact}}
        if texts is None:
            view.update({"explanation_status": "pending", "reasons": [],
                         "what_you_could_change": None, "caveat": None})
        else:
            view.update({"explanation_status": "ready", **texts[locale]})
        view["outcome"] = final["label"][locale]   # the texts name the automated outcome
        view["rights"] = [{"right": r, "text": t, "link": review_link}
                          for r, t in RIGHTS[locale]]
        view["reviews"] = [{"review_id": r["id"], "kind": r["kind"] or "human_review",
                            "status": r["status"],
                            "status_text": REVIEW_STATUS[locale].get(r["status"], r["status"]),
                            "requested_at": rfc3339(r["requested_at"]),
                            "due_at": rfc3339(r["due_at"]),
                            "decided_at": rfc3339(r["decided_at"])} for r in reviews]
        human = [r for r in reviews if (r["kind"] or "human_review") == "human_review"]
        view["review_status"] = human[-1]["status"] if human else "not_required"
        return view

    def _deployer_name(self, locale: str) -> str:
        zh = self.settings.deployer_name_zh
        return zh if locale == "zh" and zh else self.settings.deployer_name

    def _subject_texts(self, report_id: str) -> dict[str, dict[str, Any]]:
        """The subject's words of a report, per locale; reports never change, so the
        parsed texts are kept (bounded) and a read does not parse the report again."""
        with self._lock:
            found = self._texts.get(report_id)
        if found is not None:
            return found
        body = self.store.report_body(report_id)
        texts = {loc: {**self._subject_text(body, loc),
                       "data_sources": body["input"].get("data_sources_by_locale", {}).get(
                           loc, body["input"]["data_sources"]),
                       "explained_at": body["decision"]["explained_at"]} for loc in LOCALES}
        with self._lock:
            if len(self._texts) >= 4096:
                self._texts.pop(next(iter(self._texts)))
            self._texts[report_id] = texts
        return texts

    def request_review(self, decision_id: str, *, requested_by: str, reason: str,
                       kind: str = "human_review", channel: str = "api") -> dict[str, Any]:
        due = add_working_days(datetime.now(UTC), self.sla_days)
        review_id, leaf = self.store.request_review(decision_id, requested_by, reason,
                                                    kind=kind, channel=channel, due_at=due)
        return {"review_id": review_id, "status": "pending", "due_at": rfc3339(due),
                "leaf_index": leaf}

    def full_report(self, decision_id: str) -> dict[str, Any]:
        """Every field of COMPLIANCE.md: the stored report plus the live record (reviews,
        requests, access log, retention) and a receipt for the report's log entry."""
        row = self.store.decision(decision_id)
        stored = self.store.latest_report(decision_id)
        reviews = self.store.reviews_of(decision_id)
        accesses = self.store.accesses_of(decision_id)
        output = json.loads(row["output_json"])
        served = self.model_by_key(row["model_key"])
        if stored is not None:
            body = dict(stored["body"])
            receipt = self.store.receipt(self.store.leaf_of(f"reports:{stored['id']}"))
            report_meta = {"report_id": stored["id"], "report_sha256": stored["sha256"],
                           "created_at": rfc3339(stored["created_at"])}
        else:
            body = {"schema_version": REPORT_SCHEMA,
                    "decision": {"decision_id": decision_id, "case_ref": row["case_ref"],
                                 "subject_ref": row["subject_ref"],
                                 "decided_at": rfc3339(row["decided_at"]),
                                 "explained_at": None},
                    "model": {"model_id": served.model.model_id,
                              "version": served.model.version,
                              "fingerprint_sha256": served.model.fingerprint},
                    "output": output, "explanation_status": "pending or not required"}
            receipt = self.store.receipt(self.store.leaf_of(f"decisions:{decision_id}"))
            report_meta = None
        erased = self.store.payload(decision_id) is None
        body["decision"] = {**body["decision"], "logged_at": rfc3339(self._logged_at(
            decision_id))}
        human = [r for r in reviews if (r["kind"] or "human_review") == "human_review"]
        body.update({
            "report": report_meta,
            "final_outcome": self.final_outcome(served, output, reviews),
            "human_review": {
                "status": human[-1]["status"] if human else "not_required",
                "history": [{"review_id": r["id"], "status": r["status"],
                             "reviewer": r["reviewer"], "reviewer_role": r["reviewer_role"],
                             "requested_at": rfc3339(r["requested_at"]),
                             "due_at": rfc3339(r["due_at"]),
                             "decided_at": rfc3339(r["decided_at"]),
                             "rationale": r["rationale"]} for r in human]},
            "requests": [{"review_id": r["id"], "kind": r["kind"] or "human_review",
                          "channel": r["channel"], "received": rfc3339(r["requested_at"]),
                          "answered": rfc3339(r["decided_at"]), "outcome": r["status"]}
                         for r in reviews],
            "access_log": [{"actor": a["actor"], "role": a["role"], "action": a["action"],
                            "purpose": a["purpose"], "at": rfc3339(a["at"])} for a in accesses],
            "retention": {"legal_bases": self.settings.retention_days(),
                          "retain_until": rfc3339(row["retain_until"]),
                          "legal_hold": bool(row["legal_hold"]),
                          "erasure": {"erased": erased}},
            "receipt": receipt.to_dict(),
        })
        body.setdefault("regimes", list(served.card.regimes or DEFAULT_REGIMES))
        from xai_sandbox.monitor.alerts import list_alerts

        model_alerts = [a for a in list_alerts(self.store, open_only=True, limit=500)
                        if a["body"].get("model") == row["model_key"]]
        body["monitoring"] = {"open_alerts": [
            {"kind": a["kind"], "title": a["body"].get("title"), "raised_at": a["raised_at"],
             "this_decision": decision_id in a["body"].get("decisions", [])}
            for a in model_alerts]}
        return body

    def _logged_at(self, decision_id: str) -> datetime:
        from sqlalchemy import select

        from xai_sandbox.store import tables as t

        with self.store.engine.connect() as conn:
            at = conn.execute(select(t.log_entries.c.appended_at).where(
                t.log_entries.c.record_id == f"decisions:{decision_id}")).scalar_one()
        return at  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ ad hoc
    def explain_adhoc(self, *, model_id: str, features: Mapping[str, Any], method: str,
                      actor: str, version: str | None = None, target: str | None = None,
                      params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Explain an input that is not a decision; the log commits to input and result."""
        served = self.model(model_id, version)
        x, output = self.score(served, features)
        e = explain(served.model, x, method=method, target=target or output["decision"],
                    random_state=0, **dict(params or {}))
        [e], quality = assessed(served.model, x, [e], thresholds=served.policy.quality)
        salt = secrets.token_bytes(32)
        commitment = hashlib.sha256(salt + canonical_json(dict(features))).hexdigest()
        result = e.to_dict()
        digest = hashlib.sha256(canonical_json(result)).hexdigest()
        matches = (align(e, served.anchors, row=features)
                   if served.anchors is not None else None)
        chain = self._provenance({"input_commitment": commitment}, served, [e],
                                 "reg-b-form-c1", matches)
        entry_id, leaf = self.store.record_adhoc(model_key=served.key, actor=actor,
                                                 method=method, input_commitment=commitment,
                                                 explanation_sha256=digest)
        return {"explanation_id": entry_id, "model": served.key, "output": output,
                "input_salt": base64.b64encode(salt).decode(),
                "explanation": self._method_block(e), "explanation_sha256": digest,
                "provenance": chain, "receipt": self.store.receipt(leaf).to_dict(),
                "anchors": [m.to_dict() for m in matches] if matches is not None else None,
                "fairness": self._fairness(served, e), "quality": quality,
                "library_versions": library_versions()}

