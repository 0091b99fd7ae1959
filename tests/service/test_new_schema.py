"""A model on a schema the project was not built around (Boston HMDA mortgages), taken
through the real service as a new user would: uploaded as an XGBoost JSON document with its
schema and training rows, then decisions. Everything the service says about them must be
true: strict inputs refused by name, every report's reasons pass the truth check and agree
with the attributions, counterfactuals stay inside the training data and re-score as
promised, the Chinese view is in Chinese, and a reviewer's override reaches the subject."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xgboost

from hmda import hmda

LABELS = {"denied": {"en": "denied", "zh": "拒绝"}, "approved": {"en": "approved", "zh": "批准"}}


@pytest.fixture(scope="module")
def model(live):  # type: ignore[no-untyped-def]
    h = hmda()
    est = xgboost.XGBClassifier(n_estimators=40, max_depth=3, random_state=0, n_jobs=1)
    est.fit(h.X[h.train], h.y[h.train])
    spec = {"model_id": "hmda-xgb", "version": "1",
            "source": {"kind": "xgboost_json",
                       "model": bytes(est.get_booster().save_raw("json")).decode(),
                       "schema": h.schema.to_dict(), "class_names": ["approved", "denied"],
                       "training_rows": [h.rows[i] for i in h.train[:700]]},
            "policy": {"methods": ["tree_shap"], "adverse_class": "denied", "threshold": 0.3,
                       "outcome_labels": LABELS,
                       "counterfactual_max_change": {"pirat": 0.3, "hirat": 0.3}},
            "card": {"purpose": "mortgage decisions (test)",
                     "data_sources": [{"en": "mortgage application", "zh": "抵押贷款申请"}]}}
    with live.client("olivia-operator") as c:
        r = c.post("/v1/models", json=spec)
    assert r.status_code == 201, r.text
    return h, est


def _decide(live, row: dict, subject: str = "hmda-applicant"):  # type: ignore[no-untyped-def]
    with live.client("olivia-operator") as c:
        return c.post("/v1/decisions", json={"model_id": "hmda-xgb", "subject_id": subject,
                                             "features": row})


def test_strict_inputs_on_an_unseen_schema(live, model) -> None:  # type: ignore[no-untyped-def]
    h, _ = model
    row = h.rows[int(h.test[0])]
    for field, value in (("pirat", True), ("pirat", "0.3"), ("phist", 1), ("lvrat", None)):
        r = _decide(live, {**row, field: value})
        assert r.status_code == 422, (field, value, r.text)
        assert field in json.dumps(r.json())
    raw = json.dumps({"model_id": "hmda-xgb", "subject_id": "s", "features": row}).replace(
        json.dumps(row["pirat"]), "NaN", 1)
    with live.client("olivia-operator") as c:
        r = c.post("/v1/decisions", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "pirat" in r.text and "NaN" not in r.json()["detail"][0].get(
        "input", "")


def test_every_report_on_an_unseen_schema_is_true(live, model) -> None:  # type: ignore[no-untyped-def]
    h, est = model
    probs = est.predict_proba(h.X)[:, 1]
    chosen = [int(i) for i in h.test if probs[i] >= 0.3][:12] + \
        [int(i) for i in h.test if probs[i] < 0.3][:8]
    lo = {f.name: np.percentile(h.X[h.train[:700], j], 1) for j, f in
          enumerate(h.schema.features) if f.kind == "numeric"}
    hi = {f.name: np.percentile(h.X[h.train[:700], j], 99) for j, f in
          enumerate(h.schema.features) if f.kind == "numeric"}
    adverse_seen = 0
    for i in chosen:
        made = _decide(live, h.rows[i], subject=f"hmda-{i}")
        assert made.status_code == 201, made.text
        decision = made.json()["decision_id"]
        with live.client("carl-compliance") as c:
            report = c.get(f"/v1/decisions/{decision}/report").json()
        adverse = report["output"]["adverse"]
        assert adverse == (probs[i] >= 0.3)
        fairness = report["fairness"]
        assert set(fairness["proxy_tests"]) == {"afam", "single"}
        for protected, tests in fairness["proxy_tests"].items():
            assert [t["feature"] for t in tests] == fairness["proxies"][protected]
            assert all(t["measure"] == "cramers_v_bias_corrected" and t["flagged"]
                       and t["value"] >= t["threshold"] and t["p_value"] < t["alpha"]
                       for t in tests)
        reasons = report["reasons"]
        assert reasons["check"] == {"passed": True, "violations": []}
        attributions = report["explanations"][0]["attributions"]
        for r in reasons["reasons"]:
            assert r["contribution"] == pytest.approx(attributions[r["feature"]])
            assert r["contribution"] > 0
            assert h.schema.display_value(r["feature"], h.rows[i][r["feature"]]) in r["text"]["en"]
            assert (r["reason_code"] is not None) == adverse
        if not adverse:
            assert report["counterfactuals"]["requested"] is False
            continue
        adverse_seen += 1
        for option in report["counterfactuals"]["options"]:
            assert option["valid"] and option["rescored_decision"] == "approved"
            assert option["ood_score"] is not None
            for change in option["changes"]:
                spec = h.schema.feature(change["feature"])
                assert spec.mutable and not spec.protected
                if spec.kind == "numeric":
                    assert lo[spec.name] - 1e-9 <= change["after"] <= hi[spec.name] + 1e-9
                    if spec.name in ("pirat", "hirat"):
                        assert abs(change["after"] - change["before"]) <= \
                            0.3 * abs(change["before"]) + 1e-9
                    assert change["after"] < change["before"]  # monotone: risk goes down
    assert adverse_seen >= 5


def test_the_chinese_view_and_a_review_on_an_unseen_schema(live, model) -> None:  # type: ignore[no-untyped-def]
    from xai_sandbox.store import Store
    from xai_sandbox.store.accounts import Accounts

    h, est = model
    i = next(int(i) for i in h.test if est.predict_proba(h.X[i : i + 1])[0, 1] >= 0.5)
    store = Store(live.settings)
    try:
        accounts = Accounts(store.engine, store.writer)
        accounts.create_principal("hanna", ["subject"], subject_ref=store.subject_ref("hmda-zh"))
        key = accounts.issue_key("hanna")
    finally:
        store.close()
    decision = _decide(live, h.rows[i], subject="hmda-zh").json()["decision_id"]
    with live.client(key) as c:
        zh = c.get(f"/v1/decisions/{decision}?lang=zh").json()
        asked = c.post(f"/v1/decisions/{decision}/reviews", json={"reason": "请复核"}).json()
    assert zh["outcome"] == "拒绝" and zh["data_sources"] == ["抵押贷款申请"]
    assert all("使决定倾向于“拒绝”" in r["text"] and r["impact_text"].startswith("影响")
               for r in zh["reasons"])
    with live.client("rita-reviewer") as c:
        done = c.post(f"/v1/reviews/{asked['review_id']}/decision",
                      json={"outcome": "reversed", "rationale": "Verified income."})
        assert done.status_code == 200, done.text
    with live.client(key) as c:
        after = c.get(f"/v1/decisions/{decision}?lang=zh").json()
    assert after["outcome"] == "批准" and after["outcome_decided_by"] == "person"
