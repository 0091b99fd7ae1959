"""Calibration: thresholds from reviewed decisions for a target precision, logged, and used
by the models registered afterwards."""

from __future__ import annotations

from xai_sandbox.demos.credit import credit_models
from xai_sandbox.monitor.calibrate import calibrate, latest_thresholds, record_calibration
from xai_sandbox.service.demo import DEMO_MODELS
from xai_sandbox.settings import Settings
from xai_sandbox.store import Store
from xai_sandbox.store.verify import verify_log
from xai_sandbox.workflows import Decider


def test_thresholds_reach_the_target_precision_on_reviewed_decisions(tmp_path):
    store = Store(Settings(data_dir=tmp_path, log_origin="test.example/calibrate"))
    try:
        decider = Decider(store)
        decider.register(DEMO_MODELS[0])
        rows = credit_models().data.rows
        risks = {}
        for i in range(120):
            out = decider.decide(model_id="credit", subject_id=f"c{i}", features=rows[i])
            report = store.latest_report(out.decision_id)["body"]
            risk = {m["anchor"]: m["risk"] for m in report["anchors"]["matches"]}
            risks[out.decision_id] = risk["sex-and-marital-status"]
        # The reviewers' verdicts: wrong exactly when the anchor's risk was high.
        ranked = sorted(risks, key=risks.get, reverse=True)
        cut = risks[ranked[19]]
        for decision_id, risk in risks.items():
            review_id, _ = store.request_review(decision_id, "subject", "please look")
            store.decide_review(review_id, outcome="overridden" if risk >= cut else
                                "confirmed", reviewer="rita", role="reviewer",
                                rationale="verdict")
        result = calibrate(store, "credit@3", target_precision=0.9)
        sex = result["anchors"]["sex-and-marital-status"]
        assert sex["status"] == "calibrated" and sex["precision"] >= 0.9
        # The lowest threshold that keeps 90 % precision flags every wrong decision.
        assert sex["threshold"] <= cut and sex["recall"] == 1.0
        assert result["reviewed"] == 120 and result["wrong"] >= 20
        _, leaf = record_calibration(store, result)
        assert store.receipt(leaf)
        assert verify_log(store.engine, store.keys.verifiers(), store.log.origin).ok
        assert latest_thresholds(store, "credit@3")["sex-and-marital-status"] == sex[
            "threshold"]
        again = Decider(store)
        served = again.register(DEMO_MODELS[0])
        used = {a.id: a.threshold for a in served.anchors.anchors}
        assert used["sex-and-marital-status"] == sex["threshold"]
    finally:
        store.close()


def test_too_few_wrong_decisions_keep_the_threshold(tmp_path):
    store = Store(Settings(data_dir=tmp_path, log_origin="test.example/calibrate"))
    try:
        decider = Decider(store)
        decider.register(DEMO_MODELS[0])
        out = decider.decide(model_id="credit", subject_id="one",
                             features=credit_models().data.rows[1])
        review_id, _ = store.request_review(out.decision_id, "subject", "look")
        store.decide_review(review_id, outcome="reversed", reviewer="r", role="reviewer",
                            rationale="x")
        result = calibrate(store, "credit@3")
        assert all(v["status"].startswith("kept") for v in result["anchors"].values())
        assert latest_thresholds(store, "credit@3") == {}
    finally:
        store.close()
