"""Counterfactual fairness, the protected share and proxy detection on models and data
with known answers (planted proxies, independent columns)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats
from sklearn.tree import DecisionTreeClassifier

from xai_sandbox.datasets import load_german_credit
from xai_sandbox.demos.credit import credit_models
from xai_sandbox.errors import InvalidInputError
from xai_sandbox.explainers import explain
from xai_sandbox.models.registry import register
from xai_sandbox.models.schema import FeatureSchema
from xai_sandbox.semantics.fairness import (
    PROXY_MEASURE,
    counterfactual_fairness,
    cramers_v,
    likely_proxies,
    protected_share,
    proxy_associations,
)

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
    rows = [dict(r) for r in CREDIT.data.rows]
    codes = {"A91": "A121", "A92": "A122", "A93": "A123", "A94": "A124", "A95": "A124"}
    for r in rows:  # plant: 'property' now encodes sex and marital status
        r["property"] = codes[r["personal_status_sex"]]
    found = likely_proxies(SCHEMA, rows)["personal_status_sex"]
    proxies = dict(found)  # findings still unpack as (feature, value)
    assert proxies["property"] > 0.9
    top = found[0]
    assert top.feature == "property" and top.measure == PROXY_MEASURE == "cramers_v_bias_corrected"
    assert top.threshold == 0.2 and top.alpha == 0.01 and top.flagged
    assert top.p_value == pytest.approx(1 / 500)  # no shuffle comes close: the smallest p
    assert max(v for group in proxy_associations(SCHEMA, CREDIT.data.rows).values()
               for _, v in group) < 0.5


# ------------------------------------------------------------------ a 50-value code
def _state_data(seed: int, n: int = 1000, planted: float | None = None):
    """A protected 50-value state code and 21 features independent of it (every third
    numeric, the rest categorical with 2 to 20 values); with ``planted``, a 22nd feature
    ``office`` that copies the state except on a ``planted`` share of random rows."""
    rng = np.random.default_rng(seed)
    states = [f"S{i:02d}" for i in range(50)]
    features = [{"name": "state", "kind": "categorical", "protected": True,
                 "categories": states}]
    state = rng.integers(0, 50, n)
    columns: dict[str, list] = {"state": [states[i] for i in state]}
    for j in range(21):
        name = f"f{j:02d}"
        if j % 3 == 0:
            columns[name] = rng.normal(size=n).tolist()
            features.append({"name": name, "kind": "numeric"})
        else:
            m = [2, 3, 4, 5, 8, 10, 12, 20][j % 8]
            columns[name] = [f"c{v}" for v in rng.integers(0, m, n)]
            features.append({"name": name, "kind": "categorical",
                             "categories": [f"c{v}" for v in range(m)]})
    if planted is not None:
        noisy = np.where(rng.random(n) < planted, rng.integers(0, 50, n), state)
        columns["office"] = [states[i] for i in noisy]
        features.append({"name": "office", "kind": "categorical", "categories": states})
    schema = FeatureSchema.from_dict({"version": "states/1", "features": features})
    rows = [{k: v[i] for k, v in columns.items()} for i in range(n)]
    return schema, rows


def test_a_noisy_copy_of_a_50_value_code_is_its_only_proxy():
    schema, rows = _state_data(0, planted=0.4)
    found = likely_proxies(schema, rows)["state"]
    assert [f.feature for f in found] == ["office"]
    assert found[0].value > 0.5 and found[0].p_value == pytest.approx(1 / 500)
    assert found[0].levels == (50, 50)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_independent_features_of_a_50_value_code_are_not_proxies(seed):
    schema, rows = _state_data(seed)
    every = proxy_associations(schema, rows)["state"]
    assert len(every) == 21
    flagged = [f for f in every if f.flagged]
    assert len(flagged) <= 2, [f.to_dict() for f in flagged]  # alpha = 1%: 0.2 expected
    assert likely_proxies(schema, rows)["state"] == flagged
    # The plain Cramér's V, which the bias correction replaces, calls most of them proxies.
    assert sum(f.uncorrected >= 0.2 for f in every) >= 15
    assert max(f.value for f in every) < 0.2


def test_permutation_p_values_are_uniform_under_independence():
    p_values = []
    for seed in range(100, 120):
        schema, rows = _state_data(seed, n=500)
        p_values += [f.p_value for f in proxy_associations(
            schema, rows, n_permutations=199, random_state=seed)["state"]]
    p = np.array(p_values)
    assert len(p) == 420 and ((p > 0) & (p <= 1)).all()
    assert stats.kstest(p, "uniform").pvalue > 0.01
    assert 0.01 <= float(np.mean(p < 0.05)) <= 0.09
    assert 0.4 <= float(np.mean(p < 0.5)) <= 0.6


def test_bias_correction_against_scipy_uncorrected():
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 50, 1000), rng.integers(0, 5, 1000)
    table = np.zeros((50, 5), dtype=np.int64)
    np.add.at(table, (a, b), 1)
    chi2 = stats.chi2_contingency(table, correction=False)[0]
    plain = float(cramers_v(chi2, 1000, 50, 5, corrected=False))
    scipy_v = stats.contingency.association(table, method="cramer", correction=False)
    assert plain == pytest.approx(scipy_v, rel=1e-10)
    assert scipy_v > 0.2  # the bias: unrelated columns look associated
    corrected = float(cramers_v(chi2, 1000, 50, 5))
    # Bergsma (2013) by hand: phi^2 less (r-1)(k-1)/(n-1), dimensions less (m-1)^2/(n-1).
    phi2 = max(0.0, chi2 / 1000 - 49 * 4 / 999)
    by_hand = np.sqrt(phi2 / (min(50 - 49**2 / 999, 5 - 16 / 999) - 1))
    assert corrected == pytest.approx(by_hand, abs=1e-12)
    assert corrected < scipy_v - 0.1
    # A perfect association is 1 either way.
    diagonal = np.diag(np.full(5, 40))
    chi2 = stats.chi2_contingency(diagonal, correction=False)[0]
    assert float(cramers_v(chi2, 200, 5, 5)) == pytest.approx(1.0)
    assert stats.contingency.association(diagonal, method="cramer") == pytest.approx(1.0)


def test_german_credit_proxies_are_plausible():
    data = load_german_credit()
    found = likely_proxies(data.schema, data.rows)
    every = proxy_associations(data.schema, data.rows)
    assert set(found) == {"personal_status_sex", "age", "foreign_worker"}
    # Age goes with housing (owners and those housed for free are older than renters).
    assert found["age"][0].feature == "housing"
    flagged = [f for group in found.values() for f in group]
    assert 1 <= len(flagged) <= 6  # of 51 pairs: a few moderate associations, no more
    for f in flagged:
        assert 0.2 <= f.value < 0.5 and f.p_value < 0.01
    # The same seed gives the same p-values whether or not every feature is tested.
    for p, group in found.items():
        full = {f.feature: f for f in every[p]}
        for f in group:
            assert f.p_value == full[f.feature].p_value
        assert group == [f for f in every[p] if f.flagged]
    # Old callers: JSON gives [feature, value] pairs; to_dict gives the whole test.
    assert json.loads(json.dumps(found))["age"][0] == ["housing", found["age"][0].value]
    assert set(found["age"][0].to_dict()) == {
        "feature", "measure", "value", "threshold", "p_value", "alpha", "n_permutations",
        "uncorrected", "levels", "flagged"}


def test_proxy_arguments_are_checked():
    data = load_german_credit()
    with pytest.raises(InvalidInputError, match="rows: needs at least 50 rows"):
        likely_proxies(data.schema, data.rows[:49])
    with pytest.raises(InvalidInputError, match="alpha: can never be reached with 99"):
        likely_proxies(data.schema, data.rows, n_permutations=99, alpha=0.005)
    with pytest.raises(InvalidInputError, match="min_association: must be a number"):
        likely_proxies(data.schema, data.rows, min_association=1.5)
    rows = [{k: v for k, v in r.items() if k != "age"} for r in data.rows]
    with pytest.raises(InvalidInputError, match=r"rows: must hold every feature.*'age'"):
        proxy_associations(data.schema, rows)


def test_monitor_fairness_cli(tmp_path):
    import json
    import os
    import subprocess
    import sys

    from xai_sandbox.service.demo import DEMO_MODELS
    from xai_sandbox.settings import Settings
    from xai_sandbox.store import Store
    from xai_sandbox.workflows import Decider

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
