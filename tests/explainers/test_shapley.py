import itertools
import math

import numpy as np
import pytest
import torch

from helpers import make_mlp
from xai_sandbox.errors import InvalidInputError
from xai_sandbox.explainers import explain
from xai_sandbox.explainers.shapley import shapley_from_values


def _brute_force(f, x, background, d):
    """Shapley values by the permutation definition, written independently."""
    def v(coalition):
        rows = background.copy()
        rows[:, list(coalition)] = x[list(coalition)]
        return f(rows).mean()

    phi = np.zeros(d)
    perms = list(itertools.permutations(range(d)))
    for perm in perms:
        before: list[int] = []
        for i in perm:
            phi[i] += v([*before, i]) - v(before)
            before.append(i)
    return phi / len(perms)


def test_exact_equals_brute_force_on_six_features():
    model = make_mlp(d=6, hidden=16, out=3, seed=4)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 6)).astype(np.float32)
    background = rng.normal(size=(5, 6)).astype(np.float32)

    def f(rows):
        return model(torch.as_tensor(rows, dtype=torch.float32))[:, 2].detach().double().numpy()

    e = explain(model, x, method="exact_shapley", target=2, background=background)
    np.testing.assert_allclose(e.values[0], _brute_force(f, x[0], background, 6), atol=1e-6)
    assert abs(e.delta[0]) < 1e-6
    np.testing.assert_allclose(e.expected_value[0], f(background).mean(), atol=1e-6)


def test_shapley_sum_formula_equals_the_definition():
    d = 7
    v = np.random.default_rng(3).normal(size=1 << d)
    expected = np.zeros(d)
    for i in range(d):
        for m in range(1 << d):
            if not m >> i & 1:
                s = bin(m).count("1")
                expected[i] += (math.factorial(s) * math.factorial(d - s - 1)
                                / math.factorial(d) * (v[m | 1 << i] - v[m]))
    np.testing.assert_allclose(shapley_from_values(v, d), expected, atol=1e-12)


def test_linear_model_shapley_is_weight_times_difference():
    lin = torch.nn.Linear(5, 1).eval()
    x = np.ones((1, 5), dtype=np.float32) * 2
    b = np.zeros((1, 5), dtype=np.float32)
    e = explain(lin, x, method="exact_shapley", target=0, baselines=b)
    np.testing.assert_allclose(e.values[0], lin.weight.detach().numpy()[0] * 2, rtol=1e-5)


def test_groups_play_as_one_feature(credit):
    X = credit.data.X[credit.test[:1]]
    e = explain(credit.mlp, X, method="exact_shapley", target="bad")
    assert e.feature_names == credit.data.schema.names and e.values.shape == (1, 20)
    assert e.completeness_error < 1e-6  # float32 model: Σφ = f(x) - E to rounding


def test_kernel_shap_within_tolerance_of_exact(credit):
    """Stated tolerance: relative L2 error <= 10% at shap's default sample count, and the
    ranking of the top three features agrees."""
    X = credit.data.X[credit.test[:3]]
    exact = explain(credit.mlp, X, method="exact_shapley", target="bad")
    kernel = explain(credit.mlp, X, method="kernel_shap", target="bad", random_state=0)
    for r in range(3):
        err = np.linalg.norm(kernel.values[r] - exact.values[r]) / np.linalg.norm(exact.values[r])
        assert err <= 0.10
        assert [n for n, _ in kernel.ranked(r, 3)] == [n for n, _ in exact.ranked(r, 3)]
    assert np.abs(kernel.delta).max() < 1e-6  # KernelSHAP is constrained to add up


def test_too_many_players_is_a_typed_error():
    lin = torch.nn.Linear(30, 1).eval()
    with pytest.raises(InvalidInputError, match="at most max_players=20"):
        explain(lin, np.zeros((1, 30)), method="exact_shapley", target=0)


def test_tree_shap_additivity_lightgbm(credit):
    X = credit.data.X[credit.test]
    for target in ("bad", "good"):
        e = explain(credit.lightgbm, X, method="tree_shap", target=target)
        assert e.output_space == "margin"
        assert np.abs(e.delta).max() <= 1e-6
        margin = credit.lightgbm.adapter.predict_margin(X)[:, 0]
        sign = 1 if target == "bad" else -1
        np.testing.assert_allclose(e.values.sum(axis=1) + e.expected_value, sign * margin,
                                   atol=1e-6)


def test_tree_shap_additivity_xgboost_multiclass():
    import xgboost

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    y = np.digitize(X[:, 0] + X[:, 1], [-0.5, 0.5])
    est = xgboost.XGBClassifier(n_estimators=20, max_depth=3).fit(X, y)
    for target in range(3):
        e = explain(est, X[:20], method="tree_shap", target=target)
        assert np.abs(e.delta).max() <= 1e-5  # float32 trees


def test_custom_groups_of_features(credit):
    names = credit.data.schema.names
    groups = {"liquidity": ["checking_status", "savings"],
              "loan": ["duration", "credit_amount", "purpose", "installment_rate"],
              "rest": [n for n in names if n not in {"checking_status", "savings", "duration",
                                                     "credit_amount", "purpose",
                                                     "installment_rate"}]}
    X = credit.data.X[credit.test[:2]]
    e = explain(credit.mlp, X, method="exact_shapley", target="bad", groups=groups)
    assert e.feature_names == ("liquidity", "loan", "rest")
    assert e.completeness_error < 1e-6  # float32 model: Σφ = f(x) - E to rounding
    # Column methods are summed into the same groups.
    ig = explain(credit.mlp, X, method="integrated_gradients", target="bad", groups=groups)
    assert ig.feature_names == ("liquidity", "loan", "rest")
    with pytest.raises(InvalidInputError, match="must cover every feature exactly once"):
        explain(credit.mlp, X, method="exact_shapley", groups={"a": ["duration"]})
    with pytest.raises(InvalidInputError, match=r"groups\['a'\]: must name features"):
        explain(credit.mlp, X, method="exact_shapley", groups={"a": ["salary"]})


@pytest.mark.parametrize("kind", ["forest", "boosting"])
def test_tree_shap_additivity_scikit_learn(kind):
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier

    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 5))
    y = (X[:, 0] + X[:, 3] > 0).astype(int)
    est = (RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0) if
           kind == "forest" else GradientBoostingClassifier(n_estimators=20, random_state=0))
    est.fit(X, y)
    e = explain(est, X[:15], method="tree_shap", target=1)
    assert np.abs(e.delta).max() <= 1e-6
    expected_space = "probability" if kind == "forest" else "margin"
    assert e.output_space == expected_space


@pytest.mark.parametrize("kind", ["torch", "sklearn"])
def test_many_rows_in_one_call_equal_one_row_at_a_time(kind, monkeypatch):
    from sklearn.ensemble import RandomForestClassifier

    from xai_sandbox.explainers import coalitions
    from xai_sandbox.models.adapters import wrap

    rng = np.random.default_rng(7)
    X = rng.normal(size=(9, 6)).astype(np.float32)
    background = rng.normal(size=(4, 6)).astype(np.float32)
    if kind == "torch":
        adapter = wrap(make_mlp(d=6, hidden=8, out=3, seed=1))
    else:
        forest = RandomForestClassifier(n_estimators=5, random_state=0)
        adapter = wrap(forest.fit(X, [0, 1, 2] * 3))
    owner = np.array([0, 0, 1, 2, 3, 3])      # 4 players, two of them two columns
    masks = np.arange(16)
    targets = np.array([0, 1, 2] * 3)
    one = np.stack([coalitions.coalition_values(adapter, X[r], background, owner, masks,
                                                int(targets[r])) for r in range(9)])
    # 16 coalitions x 4 rows x 6 columns per row: 2 rows a call, then 1 (row by row).
    for budget in (16 * 4 * 6 * 2 + 1, 16 * 4 * 6):
        monkeypatch.setattr(coalitions, "BATCH_ELEMENTS", budget)
        many = coalitions.coalition_values_rows(adapter, X, background, owner, masks, targets)
        np.testing.assert_allclose(many, one, rtol=0, atol=1e-6)
    phi = shapley_from_values(one, 4)
    np.testing.assert_allclose(phi, np.stack([shapley_from_values(v, 4) for v in one]),
                               atol=1e-12)
