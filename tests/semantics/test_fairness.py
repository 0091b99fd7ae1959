"""Counterfactual fairness and the protected share on models with known answers."""

from __future__ import annotations

import pytest
from sklearn.tree import DecisionTreeClassifier

from xai_sandbox.demos.credit import credit_models
from xai_sandbox.errors import InvalidInputError
from xai_sandbox.explainers import explain
from xai_sandbox.models.registry import register
from xai_sandbox.semantics.fairness import counterfactual_fairness, protected_share

CREDIT = credit_models()
SCHEMA = CREDIT.data.schema
PROTECTED = [f.name for f in SCHEMA.features if f.protected]


def _model(uses_protected: bool):
    X = CREDIT.data.X
    cols = list(SCHEMA.columns)
    sex = [i for i, c in enumerate(cols) if c.startswith("personal_status_sex")]
    y = (X[:, cols.index("duration")] > 24).astype(int)
    if uses_protected:  # planted: one category of the protected attribute decides alone
        y = (X[:, sex[1]] > 0.5).astype(int)
    Xf = X.copy()
    if not uses_protected:
        Xf[:, sex] = 0.0  # constant in training: no tree can split on it
    est = DecisionTreeClassifier(max_depth=3, random_state=0).fit(Xf, y)
    return register(est, model_id="fair" if not uses_protected else "unfair", version="1",
                    class_names=["a", "b"], schema=SCHEMA,
                    reference=SCHEMA.reference_row(X))


def test_a_model_that_ignores_the_attribute_never_flips():
    rows = CREDIT.data.rows[:200]
    result = counterfactual_fairness(_model(False), rows, features=["personal_status_sex"])
    assert result["personal_status_sex"]["flip_rate"] == 0.0


def test_a_model_that_uses_the_attribute_flips_often():
    rows = CREDIT.data.rows[:200]
    result = counterfactual_fairness(_model(True), rows)
    assert result["personal_status_sex"]["flip_rate"] > 0.9
    assert set(result) == set(PROTECTED)


def test_the_demo_mlp_leans_on_protected_features_more_than_lightgbm_is_measured():
    rows = CREDIT.data.rows[:100]
    for model in (CREDIT.mlp, CREDIT.lightgbm):
        result = counterfactual_fairness(model, rows, data=CREDIT.data.X)
        assert all(0.0 <= r["flip_rate"] <= 1.0 for r in result.values())
    e = explain(CREDIT.lightgbm, CREDIT.data.X[:50], method="tree_shap", target="bad")
    share = protected_share(e, PROTECTED)
    assert 0.0 < share["mean_share"] < 1.0 and share["rows"] == 50
    assert sum(share["by_feature"].values()) == pytest.approx(share["mean_share"])
    with pytest.raises(InvalidInputError):
        protected_share(e, ["shoe_size"])


def test_a_copy_of_a_protected_feature_is_found_as_its_proxy():
    from xai_sandbox.semantics.fairness import likely_proxies

    rows = [dict(r) for r in CREDIT.data.rows]
    codes = {"A91": "A121", "A92": "A122", "A93": "A123", "A94": "A124", "A95": "A124"}
    for r in rows:  # plant: 'property' now encodes sex and marital status
        r["property"] = codes[r["personal_status_sex"]]
    proxies = dict(likely_proxies(SCHEMA, rows)["personal_status_sex"])
    assert proxies["property"] > 0.9
    assert max(v for n, v in likely_proxies(SCHEMA, CREDIT.data.rows)[
        "personal_status_sex"]) < 0.5


def test_monitor_fairness_cli(tmp_path):
    import json
    import os
    import subprocess
    import sys

    from xai_sandbox.reports.pipeline import Decider
    from xai_sandbox.service.demo import DEMO_MODELS
    from xai_sandbox.settings import Settings
    from xai_sandbox.store import Store

    store = Store(Settings(data_dir=tmp_path))
    decider = Decider(store)
    decider.register(DEMO_MODELS[0])
    for i in range(60):
        decider.decide(model_id="credit", subject_id=f"f{i}", features=CREDIT.data.rows[i])
    store.close()
    out = subprocess.run([sys.executable, "-m", "xai_sandbox.cli", "monitor", "fairness",
                          "--model", "credit@3"],
                         env={**os.environ, "XAI_SANDBOX_DATA_DIR": str(tmp_path)},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout)
    assert result["decisions"] == 60
    assert set(result["counterfactual_fairness"]) == set(PROTECTED)
    assert 0 < result["protected_share"]["mean"] < 1
    assert 0 < result["proxy_share"]["mean"] < 1
    assert set(result["likely_proxies"]) == set(PROTECTED)
