"""Explanation policies: validation with clear errors, and which decisions they explain."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from xai_sandbox.errors import InvalidInputError
from xai_sandbox.reports.policy import ExplanationPolicy, ModelCard
from xai_sandbox.workflows import add_working_days

CLASSES = ("good", "bad")
LABELS = {"bad": {"en": "declined", "zh": "拒绝"}, "good": {"en": "approved", "zh": "批准"}}
BASE = {"methods": ["tree_shap"], "adverse_class": "bad", "outcome_labels": LABELS}


@pytest.mark.parametrize(("change", "parameter"), [
    ({"methods": []}, "policy.methods"),
    ({"methods": ["magic"]}, "policy.methods"),
    ({"adverse_class": "ugly"}, "policy.adverse_class"),
    ({"outcome_labels": {"bad": {"en": "declined"}}}, "policy.outcome_labels.bad"),
    ({"outcome_labels": {"bad": LABELS["bad"]}}, "policy.outcome_labels"),
    ({"mode": "sometimes"}, "policy.mode"),
    ({"share": 1.5}, "policy.share"),
    ({"threshold": True}, "policy.threshold"),
    ({"counterfactuals": 11}, "policy.counterfactuals"),
    ({"run_as_job": "false"}, "policy.run_as_job"),
    ({"counterfactual_max_change": ["duration"]}, "policy.counterfactual_max_change"),
    ({"counterfactual_max_change": {"duration": -1}},
     "policy.counterfactual_max_change.duration"),
    ({"colour": "red"}, "policy"),
])
def test_bad_policies_name_the_field(change, parameter):
    with pytest.raises(InvalidInputError) as err:
        ExplanationPolicy.from_dict({**BASE, **change}, CLASSES)
    assert err.value.parameter == parameter


def test_always_explains_everything():
    policy = ExplanationPolicy.from_dict(BASE, CLASSES)
    assert policy.explains(adverse=False, confidence=0.99, decision_id="x")
    assert not policy.deferred


def test_below_confidence_explains_doubtful_and_adverse_decisions_only():
    policy = ExplanationPolicy.from_dict({**BASE, "mode": "below_confidence",
                                          "confidence_threshold": 0.8}, CLASSES)
    assert policy.explains(adverse=False, confidence=0.7, decision_id="x")
    assert not policy.explains(adverse=False, confidence=0.9, decision_id="x")
    assert policy.explains(adverse=True, confidence=0.99, decision_id="x")  # Reg B, GDPR


def test_sampled_share_is_reproducible_from_the_decision_id():
    policy = ExplanationPolicy.from_dict({**BASE, "mode": "sampled", "share": 0.25}, CLASSES)
    ids = [str(uuid.UUID(int=i)) for i in range(4000)]
    chosen = [policy.explains(adverse=False, confidence=0.9, decision_id=i) for i in ids]
    assert 0.22 < sum(chosen) / len(ids) < 0.28
    assert chosen == [policy.explains(adverse=False, confidence=0.9, decision_id=i)
                      for i in ids]


def test_expensive_methods_make_the_policy_run_as_a_job():
    policy = ExplanationPolicy.from_dict({**BASE, "methods": ["exact_shapley", "tree_shap"]},
                                         CLASSES)
    assert policy.deferred
    assert ExplanationPolicy.from_dict(policy.to_dict(), CLASSES) == policy


def test_model_card_validation():
    with pytest.raises(InvalidInputError) as err:
        ModelCard.from_dict({"purpose": ""})
    assert err.value.parameter == "card.purpose"
    with pytest.raises(InvalidInputError):
        ModelCard.from_dict({"regimes": "GDPR"})
    assert ModelCard.from_dict(None).validation_status == "not validated"


def test_working_days_skip_weekends():
    friday = datetime(2026, 11, 20, 15, tzinfo=UTC)
    assert add_working_days(friday, 1) == datetime(2026, 11, 23, 15, tzinfo=UTC)
    assert add_working_days(friday, 7) == datetime(2026, 12, 1, 15, tzinfo=UTC)
