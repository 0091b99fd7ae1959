"""Request and response bodies of the REST API, with the examples the OpenAPI document
shows."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal

from pydantic import (
    AllowInfNan,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictInt,
    StrictStr,
    create_model,
)

from xai_sandbox.reports.report import Report

__all__ = ["ERROR_RESPONSES", "AdhocExplanation", "Alert", "AlertAcknowledged", "Checkpoint",
           "ConsistencyProof", "DecisionItem", "DecisionRecorded", "DecisionRequest",
           "ErrorBody", "ExplainRequest", "FullReport", "Health", "InclusionProof", "Job",
           "LogEntries", "ModelRequest", "ModelSummary", "Probe", "Receipt", "Review",
           "ReviewClaim",
           "ReviewDecided", "ReviewDecision", "ReviewRequest", "ReviewRequested", "SubjectView",
           "TextExplainRequest", "TextExplanation"]

# Strict: JSON ``true`` is never read as 1, nor "12" as 12. A boolean passes here so that
# the feature schema refuses it naming the feature ("features.duration: must be a number").
FiniteFloat = Annotated[float, Strict(), AllowInfNan(False)]
Scalar = StrictBool | StrictInt | FiniteFloat | StrictStr

GERMAN_CREDIT_EXAMPLE: dict[str, Any] = {
    "checking_status": "A12", "duration": 48, "credit_history": "A32", "purpose": "A43",
    "credit_amount": 5951, "savings": "A61", "employment_since": "A73",
    "installment_rate": 2, "personal_status_sex": "A92", "other_debtors": "A101",
    "residence_since": 2, "property": "A121", "age": 22, "other_installment_plans": "A143",
    "housing": "A152", "existing_credits": 1, "job": "A173", "dependants": 1,
    "telephone": "A191", "foreign_worker": "A201"}

_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class ErrorBody(BaseModel):
    """Every error: a message naming the parameter, the rule and the value; for 422 a
    list with one entry per field (``loc`` is the path to it)."""

    detail: str | list[dict[str, Any]]


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text} for status, text in (
        (401, "no key, or an unknown or revoked key"),
        (403, "the key's roles do not allow this"),
        (404, "no such record (or not yours)"),
        (409, "the record's state forbids this now"),
        (413, "the body is too large"),
        (422, "a parameter or field breaks a rule"),
        (429, "too many explanation reads; see Retry-After"))}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Source(_Strict):
    kind: Literal["builtin", "xgboost_json"]
    name: str | None = Field(default=None, max_length=128,
                             description="built-in model (kind 'builtin')")
    model: str | None = Field(default=None, max_length=50_000_000,
                              description="XGBoost model in its JSON format")
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    class_names: list[str] | None = None
    training_rows: list[dict[str, Scalar]] | None = None


class ModelRequest(_Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "model_id": "credit", "version": "3",
        "source": {"kind": "builtin", "name": "german-credit-lightgbm"},
        "policy": {"methods": ["tree_shap"], "adverse_class": "bad",
                   "outcome_labels": {"bad": {"en": "declined", "zh": "拒绝"},
                                      "good": {"en": "approved", "zh": "批准"}}},
        "card": {"purpose": "consumer credit decisions",
                 "training_data": "German credit (Statlog), 800 applicants",
                 "validation_status": "validated 2026-11"}}]})

    model_id: str = Field(pattern=_ID)
    version: str = Field(default="1", pattern=_ID)
    source: Source
    policy: dict[str, Any]
    card: dict[str, Any] | None = None
    anchors: str | dict[str, Any] | None = Field(
        default=None, description="a shipped anchor library (e.g. 'german-credit') or one "
                                  "given inline")


class DecisionRequest(_Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "model_id": "credit", "subject_id": "applicant-0001", "case_ref": "APP-2026-0001",
        "features": GERMAN_CREDIT_EXAMPLE}]})

    model_id: str = Field(pattern=_ID)
    version: str | None = Field(default=None, pattern=_ID)
    subject_id: str = Field(min_length=1, max_length=256,
                            description="the person's id at the deployer; stored only as "
                                        "a keyed hash")
    case_ref: str | None = Field(default=None, min_length=1, max_length=128)
    features: dict[str, Scalar] = Field(description="one value per feature of the schema")


class ExplainRequest(_Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "model_id": "credit", "input": GERMAN_CREDIT_EXAMPLE, "method": "tree_shap"}]})

    model_id: str = Field(pattern=_ID)
    version: str | None = Field(default=None, pattern=_ID)
    input: dict[str, Scalar] | list[FiniteFloat] = Field(
        description="feature name -> value, or the encoded columns in schema order")
    method: str = Field(default="tree_shap", max_length=64)
    target: str | None = Field(default=None, max_length=128)
    params: dict[str, Scalar] = Field(default_factory=dict)


class TextExplainRequest(_Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "model_id": "minilm-sentiment",
        "text": "I might be late with the payment because I lost my job; the branch staff "
                "were unhelpful.",
        "method": "integrated_gradients"}]})

    model_id: str = Field(pattern=_ID, description="a built-in text model")
    text: str = Field(min_length=1, max_length=2000)
    method: Literal["integrated_gradients", "gradient_x_input", "occlusion"] = \
        "integrated_gradients"
    target: str | None = Field(default=None, max_length=128,
                               description="class to explain (default: the predicted one)")


class ReviewRequest(_Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "reason": "My savings were recently moved to another bank; please look again.",
        "kind": "human_review"}]})

    # At least one character that is not white space (the document says so).
    reason: str = Field(min_length=1, max_length=4000, pattern=r"\S")
    kind: Literal["human_review", "contest", "explanation"] = "human_review"


class ReviewDecision(_Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "outcome": "overridden",
        "rationale": "Verified savings statement shows 1,200 DM; approved on review."}]})

    outcome: Literal["confirmed", "overridden", "reversed"]
    rationale: str = Field(min_length=1, max_length=4000)


# ---------------------------------------------------------------------- responses
# The answers, in the order their fields are sent. Models of answers the library builds
# (a model's summary, an explanation, an alert) take further fields as they come
# (``extra="allow"``), so a field the library adds is sent rather than dropped.
Section = dict[str, Any]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Health(BaseModel):
    status: str
    log_size: int
    models: int


class Probe(BaseModel):
    """A liveness or readiness answer; ``reason`` says why a process is not ready."""

    status: str
    reason: str | None = None


class ModelSummary(_Open):
    """A registered model: identity, fingerprint, schema, explanation policy and card."""

    model_id: str
    version: str
    key: str = Field(description="model_id@version")
    fingerprint: str
    task: str
    class_names: list[str]
    features: list[str]
    schema_version: str
    policy: Section
    card: Section
    anchors: Section | None
    source: str
    format: str | None = Field(default=None, description="the model file's format, for a "
                               "model registered from a file")
    notes: list[str] = Field(default_factory=list, description="what to know about the "
                             "model's methods (why gradient methods are unavailable, ...)")
    methods: dict[str, str] = Field(default_factory=dict, description="each tabular "
                                    "method: 'available', or why it does not run here")


class Receipt(BaseModel):
    """Proof that an entry is in the audit log: the entry, its leaf hash, the inclusion
    proof and the signed checkpoint it verifies against (check it offline)."""

    origin: str
    leaf_index: int
    leaf_hash: str
    entry: str
    inclusion_proof: list[str]
    checkpoint: str
    key_id: str


class ExplanationState(BaseModel):
    """``ready`` (with the report's link), ``queued`` (with the job's) or
    ``not_required``."""

    status: Literal["ready", "queued", "not_required"]
    report_url: str | None = None
    job_id: str | None = None
    job_url: str | None = None


class DecisionRecorded(BaseModel):
    decision_id: str
    case_ref: str | None
    model: str
    output: Section = Field(description="score, decision, label, confidence, probabilities, "
                                        "policy version")
    explanation: ExplanationState
    subject_view_url: str
    receipt: Receipt


class DecisionItem(BaseModel):
    decision_id: str
    case_ref: str | None
    model: str
    decided_at: str | None
    decision: str


class Right(BaseModel):
    right: str
    text: str
    link: str


class SubjectView(_Open):
    """The decision in plain language for the person decided about (no raw numbers)."""

    decision_id: str
    case_ref: str | None
    decided_at: str | None
    locale: str
    outcome: str
    outcome_decided_by: str
    outcome_decided_at: str | None
    automated_outcome: str
    outcome_note: str | None
    deployer: Section
    explanation_status: str
    reasons: list[Section]
    what_you_could_change: Section | None
    caveat: str | None
    rights: list[Right]
    reviews: list[Section]
    review_status: str


# A full report's live part is always there; the explained part once it is explained.
_FULL_REQUIRED: dict[str, Any] = {
    "schema_version": str, "decision": Section, "model": Section, "output": Section,
    "report": Section | None, "final_outcome": Section, "human_review": Section,
    "requests": list[Section], "access_log": list[Section], "retention": Section,
    "receipt": Receipt, "regimes": list[str], "monitoring": Section}


def _full_report_fields() -> dict[str, Any]:
    """FullReport's fields, one per field of the typed ``Report`` (one list, no drift)."""
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(Report):
        if f.name == "full":
            continue
        if f.name in _FULL_REQUIRED:
            fields[f.name] = (_FULL_REQUIRED[f.name], ...)
        else:
            many = "Sequence" in str(f.type)
            fields[f.name] = ((list[Section] if many else Section) | None
                              if f.name != "explanation_status" else str | None, None)
    return fields


FullReport = create_model(
    "FullReport", __base__=_Open, __doc__="Every field of COMPLIANCE.md (canonical JSON), "
    "one per field of the typed Report. The sections of the explanation are present once "
    "the decision is explained.", **_full_report_fields())


class AdhocExplanation(_Open):
    explanation_id: str
    model: str
    output: Section
    input_salt: str = Field(description="base64; with the input, opens the commitment")
    explanation: Section
    explanation_sha256: str
    provenance: list[Section]
    receipt: Receipt
    anchors: list[Section] | None
    fairness: Section
    quality: Section
    library_versions: dict[str, str]


class TextExplanation(_Open):
    explanation_id: str
    model: str
    fingerprint_sha256: str
    prediction: dict[str, float] | None
    target: str
    method: str
    tokens: list[str]
    token_attributions: list[float]
    words: list[Section]
    completeness_error: float | None
    n_steps: int | None
    anchors: list[Section]
    hits: list[str]
    alerts_raised: list[str]
    input_salt: str
    explanation_sha256: str
    library_versions: dict[str, str]
    receipt: Receipt


class Job(BaseModel):
    job_id: str
    decision_id: str
    status: Literal["queued", "running", "done", "failed"]
    methods: list[str]
    attempts: int
    created_at: str | None
    finished_at: str | None
    error: str | None
    report_url: str | None


class ReviewRequested(_Open):
    review_id: str
    status: str
    due_at: str | None
    leaf_index: int


class ReviewStep(BaseModel):
    action: str
    actor: str
    role: str
    at: str | None


class Review(BaseModel):
    """A review request. The subject of the decision reads its id, decision, kind, status
    and dates; reviewers, compliance officers and auditors read every field."""

    review_id: str
    decision_id: str
    kind: str
    status: str
    reason: str | None = None
    requested_by: str | None = None
    requested_at: str | None
    due_at: str | None
    claimed_by: str | None = None
    reviewer: str | None = None
    decided_at: str | None
    rationale: str | None = None
    steps: list[ReviewStep] | None = None


class ReviewClaim(BaseModel):
    review_id: str
    claimed_by: str | None = Field(description="null once released")
    leaf_index: int


class ReviewDecided(BaseModel):
    review_id: str
    status: str
    leaf_index: int
    receipt: Receipt


class Delivery(_Open):
    url: str
    shape: str
    status: str
    attempts: int
    delivered_at: str | None


class Alert(_Open):
    alert_id: str
    kind: str
    body: Section
    raised_at: str | None
    acknowledged_at: str | None
    acknowledged_by: str | None
    deliveries: list[Delivery]


class AlertAcknowledged(BaseModel):
    alert_id: str
    acknowledged_by: str


class Checkpoint(BaseModel):
    origin: str
    size: int
    checkpoint: str = Field(description="a C2SP signed note")
    verifier_keys: list[str]


class InclusionProof(BaseModel):
    index: int
    size: int
    proof: list[str] = Field(description="base64 hashes, RFC 9162")


class ConsistencyProof(BaseModel):
    old: int
    new: int
    proof: list[str] = Field(description="base64 hashes, RFC 9162")


class LogEntry(BaseModel):
    index: int
    kind: str
    record_id: str
    leaf_hash: str
    body: Section


class LogEntries(BaseModel):
    start: int
    end: int
    size: int
    entries: list[LogEntry]
