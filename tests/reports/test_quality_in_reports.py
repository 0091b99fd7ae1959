"""The quality block on every explanation: stored with the report, shown in the full
report, reflected in the subject's caveat, and (by a model's thresholds) withheld with the
decision sent to human review in the same transaction."""

from __future__ import annotations

import copy

import pytest

from xai_sandbox.demos.credit import credit_models
from xai_sandbox.errors import InvalidInputError
from xai_sandbox.reports.render import render_html
from xai_sandbox.semantics.notices import CAVEAT_OK, CAVEAT_QUALITY, CAVEAT_WITHHELD
from xai_sandbox.service.demo import DEMO_MODELS
from xai_sandbox.settings import Settings
from xai_sandbox.store import Store
from xai_sandbox.workflows import Decider


@pytest.fixture
def decider(tmp_path):  # type: ignore[no-untyped-def]
    store = Store(Settings(data_dir=tmp_path))
    yield Decider(store)
    store.close()


def _spec(quality: dict | None = None, version: str = "3") -> dict:
    spec = copy.deepcopy(DEMO_MODELS[0])
    spec["version"] = version
    if quality is not None:
        spec["policy"]["quality"] = quality
    return spec


def _decide(decider: Decider, version: str = "3"):  # type: ignore[no-untyped-def]
    rows = credit_models().data.rows
    return decider.decide(model_id="credit", version=version, subject_id="applicant-q",
                          features=rows[0])


def test_every_report_carries_its_quality_block(decider) -> None:
    decider.register(_spec())
    out = _decide(decider)
    report = decider.full_report(out.decision_id)
    quality = report["quality"]
    tree = quality["methods"]["tree_shap"]
    assert quality["principal"] == "tree_shap" and quality["level"] == "default"
    assert tree["curves"]["players"] == 20 and len(tree["curves"]["fractions"]) == 21
    assert tree["curves"]["gap"] > 0.2
    assert tree["completeness_error"] < 1e-6
    assert quality["verdict"] == {"reliable": True, "why": [], "action": "show"}
    assert report["reliability"]["shown"] is True
    html = render_html(report)
    assert "Explanation quality" in html and "deletion and insertion" in html.lower()
    view = decider.subject_view(out.decision_id, "en", "/review")
    assert view["caveat"] == CAVEAT_OK["en"] and view["reliability"] == "normal"


def test_a_failing_block_with_caveat_is_shown_with_the_quality_caveat(decider) -> None:
    decider.register(_spec({"min_gap": 5.0}))      # far above what this model reaches
    out = _decide(decider)
    report = decider.full_report(out.decision_id)
    assert report["quality"]["verdict"]["action"] == "caveat"
    assert "gap" in report["reliability"]["why_low"][0]
    view = decider.subject_view(out.decision_id, "zh", "/review")
    assert view["caveat"] == CAVEAT_QUALITY["zh"] and view["reliability"] == "low"
    assert view["reasons"]                       # shown
    assert view["review_status"] == "not_required"


def test_a_withheld_explanation_goes_to_human_review_instead(decider) -> None:
    decider.register(_spec({"min_gap": 5.0, "action": "withhold"}))
    out = _decide(decider)
    report = decider.full_report(out.decision_id)
    assert report["reliability"]["shown"] is False
    assert report["review_required"]["requested_by"] == "system:explanation-quality"
    view = decider.subject_view(out.decision_id, "en", "/review")
    assert view["reasons"] == [] and view["caveat"] == CAVEAT_WITHHELD["en"]
    assert view["reliability"] == "withheld"
    assert view["review_status"] == "pending" and view["reviews"][0]["due_at"]
    queue = decider.store.review_queue()
    assert [r["decision_id"] for r in queue] == [out.decision_id]
    assert queue[0]["channel"] == "quality_gate" and "gap" in queue[0]["reason"]
    # The review entered the audit log with the report.
    reviews = decider.store.reviews_of(out.decision_id)
    assert decider.store.leaf_of(f"reviews:{reviews[0]['id']}") > out.leaf_index


def test_quality_thresholds_are_validated_with_the_field_named(decider) -> None:
    for bad, field in (({"min_gap": 20}, "quality.min_gap"),
                       ({"action": "hide"}, "quality.action"),
                       ({"agreement_k": 0}, "quality.agreement_k"),
                       ({"colour": 1}, "quality")):
        with pytest.raises(InvalidInputError) as err:
            decider.register(_spec(bad))
        assert err.value.parameter.endswith(field)


def test_ad_hoc_explanations_carry_a_quality_block(decider) -> None:
    decider.register(_spec())
    rows = credit_models().data.rows
    result = decider.explain_adhoc(model_id="credit", features=rows[3], method="tree_shap",
                                   actor="test")
    assert result["quality"]["methods"]["tree_shap"]["curves"]["defined"]
