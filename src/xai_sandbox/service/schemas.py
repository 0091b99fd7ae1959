"""Request and response bodies of the REST API, with the examples the OpenAPI document
shows."""

from __future__ import annotations

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
)

__all__ = ["ERROR_RESPONSES", "DecisionRequest", "ErrorBody", "ExplainRequest", "ModelRequest",
           "ReviewDecision", "ReviewRequest"]

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

    reason: str = Field(min_length=1, max_length=4000)
    kind: Literal["human_review", "contest", "explanation"] = "human_review"


class ReviewDecision(_Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "outcome": "overridden",
        "rationale": "Verified savings statement shows 1,200 DM; approved on review."}]})

    outcome: Literal["confirmed", "overridden", "reversed"]
    rationale: str = Field(min_length=1, max_length=4000)
