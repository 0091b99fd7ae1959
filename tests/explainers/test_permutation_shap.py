"""permutation_shap: Shapley values from random orders of the players (Captum
ShapleyValueSampling) with their standard error; checked against the analytic answer of a
linear model, against exact enumeration within its stated bound, and against Captum run
directly with the same orders. And wide models: declared groups bring a 22-feature credit
model within exact reach; past the exact limit a decision's explanation is computed as
exact Owen values over the schema's declared groups, or, without groups, estimated by
permutation SHAP, and says which and why."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from xai_sandbox.errors import InvalidInputError
from xai_sandbox.explainers import explain
from xai_sandbox.models.adapters import TorchAdapter
from xai_sandbox.models.registry import register
from xai_sandbox.models.schema import FeatureSchema
from xai_sandbox.workflows.explain import (
    EXACT_EVALUATIONS,
    exact_fallback,
    exact_limit,
    explain_within_budget,
    owen_limit,
    shapley_route,
)


def linear(d: int, seed: int = 0) -> tuple[torch.nn.Module, np.ndarray]:
    gen = torch.Generator().manual_seed(seed)
    net = torch.nn.Linear(d, 2, dtype=torch.float64)
    with torch.no_grad():
        net.weight.copy_(torch.randn((2, d), generator=gen, dtype=torch.float64))
        net.bias.zero_()
    return torch.nn.Sequential(net).eval(), net.weight.detach().numpy()


def interacting(d: int) -> torch.nn.Module:
    class Game(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = x[:, 0] * x[:, 1] + torch.tanh(x[:, 2] * x[:, 3]) + 0.5 * x[:, 4:].sum(1)
            return torch.stack([-out, out], dim=1)

    return Game().eval()


def adapter(module: torch.nn.Module, d: int) -> TorchAdapter:
    return TorchAdapter(module, input_kind="tabular", sample_shape=(d,), output_space="logit")


def test_a_linear_model_gets_its_analytic_values_with_no_error():
    net, w = linear(7)
    rng = np.random.default_rng(1)
    x, bg = rng.normal(size=(3, 7)), rng.normal(size=(25, 7))
    e = explain(adapter(net, 7), x, method="permutation_shap", background=bg, target=1,
                n_permutations=8, random_state=0)
    np.testing.assert_allclose(e.values, w[1] * (x - bg.mean(axis=0)), rtol=1e-9, atol=1e-12)
    assert e.parameters["error_bound"] < 1e-12      # every order gives the same values
    assert np.abs(e.completeness_error).max() < 1e-12


@pytest.mark.parametrize("seed", range(4))
def test_estimates_lie_within_the_stated_bound_of_the_exact_values(seed):
    d = 8
    rng = np.random.default_rng(seed)
    x, bg = rng.normal(size=(2, d)), rng.normal(size=(10, d))
    model = adapter(interacting(d), d)
    exact = explain(model, x, method="exact_shapley", background=bg, target=1)
    sampled = explain(model, x, method="permutation_shap", background=bg, target=1,
                      n_permutations=128, random_state=seed)
    se = np.asarray(sampled.parameters["standard_error"])
    assert se.shape == (2, d) and (se[:, :4] > 1e-4).all()
    # Features 4.. are additive: exact in every order, so no error beyond the float32
    # model's own rounding.
    np.testing.assert_allclose(sampled.values[:, 4:], exact.values[:, 4:], atol=1e-6)
    assert np.abs(sampled.values - exact.values).max() <= sampled.parameters["error_bound"]
    assert np.abs(sampled.completeness_error).max() < 1e-5
    more = explain(model, x, method="permutation_shap", background=bg, target=1,
                   n_permutations=1024, random_state=seed)
    assert more.parameters["error_bound"] < sampled.parameters["error_bound"]


def test_the_values_are_captums_own_with_the_same_orders():
    from captum.attr import ShapleyValueSampling

    d = 6
    rng = np.random.default_rng(3)
    x, base = rng.normal(size=(1, d)), rng.normal(size=(1, d))
    module = interacting(d)
    ours = explain(adapter(module, d), x, method="permutation_shap", baselines=base,
                   target=1, n_permutations=40, random_state=11)
    gen = torch.Generator().manual_seed(11)
    reference = ShapleyValueSampling(lambda t: module(t)[:, 1])
    reference.permutation_generator = lambda n, k: (
        torch.randperm(n, generator=gen).tolist() for _ in range(k))
    theirs = reference.attribute(torch.as_tensor(x), baselines=torch.as_tensor(base),
                                 n_samples=40, show_progress=False).numpy()
    # Captum accumulates in float32: equal to its precision.
    np.testing.assert_allclose(ours.values, theirs, rtol=1e-6, atol=1e-6)


def test_seeds_and_parameters():
    d = 6
    model = adapter(interacting(d), d)
    x = np.random.default_rng(0).normal(size=(1, d))
    a, b, c = (explain(model, x, method="permutation_shap", random_state=s) for s in (1, 1, 2))
    np.testing.assert_array_equal(a.values, b.values)
    assert not np.allclose(a.values, c.values)
    for params, named in (({"n_permutations": 1}, "n_permutations"),
                          ({"n_permutations": 10**6}, "n_permutations"),
                          ({"n_batches": 4}, "n_batches"),
                          ({"n_permutations": True}, "n_permutations")):
        with pytest.raises(InvalidInputError, match=named):
            explain(model, x, method="permutation_shap", **params)


def wide_credit() -> tuple[FeatureSchema, np.ndarray, list[dict[str, Any]]]:
    """German credit with two derived features (22), and declared groups that bring the
    players to 19."""
    from xai_sandbox.datasets import load_german_credit

    data = load_german_credit()
    raw = data.schema.to_dict()
    raw["features"] += [
        {"name": "monthly_amount", "kind": "numeric", "bounds": [0, 20_000]},
        {"name": "age_at_end", "kind": "numeric", "bounds": [18, 100]}]
    raw["groups"] = [
        {"name": "loan", "features": ["duration", "credit_amount", "monthly_amount"]},
        {"name": "life_stage", "features": ["age", "age_at_end"]}]
    schema = FeatureSchema.from_dict(raw)
    rows = [{**r, "monthly_amount": r["credit_amount"] / r["duration"],
             "age_at_end": r["age"] + r["duration"] / 12} for r in data.rows]
    return schema, data.y, rows


@pytest.fixture(scope="module")
def wide():
    schema, y, rows = wide_credit()
    X = schema.encode(rows)
    mu, sd = X.mean(axis=0), X.std(axis=0) + 1e-9
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(X.shape[1], 16), torch.nn.Tanh(),
                              torch.nn.Linear(16, 2))
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    Xt = torch.as_tensor((X - mu) / sd, dtype=torch.float32)
    yt = torch.as_tensor(y)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(Xt), yt).backward()
        opt.step()
    raw = schema.to_dict()
    for f in raw["features"]:
        if f["kind"] == "numeric":
            i = schema.columns.index(f["name"])
            f["encoding"] = {"center": float(mu[i]), "scale": float(sd[i])}
    scaled_schema = FeatureSchema.from_dict(raw)
    from xai_sandbox.models.pipeline import scaled

    model = register(scaled(adapter(net.eval(), X.shape[1]), scaled_schema),
                     model_id="wide", version="1", class_names=("good", "bad"),
                     schema=scaled_schema, background=X[:6])
    return model, X


@pytest.fixture(scope="module")
def ungrouped(wide):
    """The same model, its schema without the declared groups."""
    model, X = wide
    raw = model.schema.to_dict()
    del raw["groups"]
    schema = FeatureSchema.from_dict(raw)
    return register(model.adapter, model_id="wide-ungrouped", version="1",
                    class_names=("good", "bad"), schema=schema, background=X[:6]), X


def test_declared_groups_bring_a_22_feature_model_within_exact_reach(wide):
    model, X = wide
    schema = model.schema
    assert len(schema.names) == 22
    with pytest.raises(InvalidInputError, match="max_players=20"):
        explain(model, X[:1], method="exact_shapley")
    groups = schema.player_groups()
    assert len(groups) == 19
    e = explain(model, X[:1], method="exact_shapley", groups=groups, target="bad")
    assert e.feature_names == tuple(groups)
    assert np.abs(e.completeness_error).max() < 1e-5
    # The sampled values over the same players agree with the exact ones within the bound.
    s = explain(model, X[:1], method="permutation_shap", groups=groups, target="bad",
                n_permutations=256, random_state=0)
    assert np.abs(s.values - e.values).max() <= s.parameters["error_bound"]


def test_past_the_exact_limit_a_decision_is_sampled_and_says_so(ungrouped):
    model, X = ungrouped
    why = exact_fallback(model)
    assert why is not None and "22 features exceed its limit of 20" in why
    assert shapley_route(model) == ("permutation_shap", why)
    e = explain_within_budget(model, X[:1], "exact_shapley", 1, seed=5)
    assert e.method == "permutation_shap"
    assert e.parameters["requested_method"] == "exact_shapley"
    bound = e.parameters["error_bound"]
    assert f"error_bound {bound:.3g}" in e.parameters["fallback"]
    assert e.feature_names == model.schema.names
    # Within the limit nothing changes.
    same = explain_within_budget(model, X[:1], "integrated_gradients", 1, seed=5)
    assert same.method == "integrated_gradients" and "fallback" not in same.parameters


def test_past_the_exact_limit_declared_groups_give_exact_owen_values(wide, ungrouped):
    model, X = wide
    why = exact_fallback(model)
    assert shapley_route(model) == ("owen_shapley", why)
    e = explain_within_budget(model, X[:1], "exact_shapley", 1, seed=5)
    assert e.method == "owen_shapley" and e.feature_names == model.schema.names
    assert e.parameters["requested_method"] == "exact_shapley"
    assert e.parameters["fallback"].startswith(
        "owen_shapley over the schema's feature groups (loan, life_stage), because "
        "exact Shapley values enumerate 2^d coalitions: 22 features exceed")
    assert e.parameters["unions"] == model.schema.declared_groups()
    assert np.abs(e.completeness_error).max() < 1e-5
    # Each group's members add up to the group's exact Shapley value among the 19 players.
    groups = explain(model, X[:1], method="exact_shapley", groups=model.schema.player_groups(),
                     target=1)
    names = list(e.feature_names)
    for group, members in model.schema.player_groups().items():
        np.testing.assert_allclose(
            sum(e.values[0, names.index(m)] for m in members),
            groups.values[0, list(groups.feature_names).index(group)], atol=1e-6)
    # The sampled estimate of the same model without groups is near, not equal: the
    # groups change the game's structure, not its total.
    sampled = explain_within_budget(ungrouped[0], X[:1], "exact_shapley", 1, seed=5)
    assert e.values.sum() == pytest.approx(sampled.values.sum(), abs=1e-5)


def test_the_budget_of_a_model_without_the_torch_path():
    assert exact_limit(18, 1, differentiable=False) is None
    assert (1 << 18) <= EXACT_EVALUATIONS < (1 << 19)
    assert "model evaluations" in exact_limit(19, 1, differentiable=False)
    assert exact_limit(20, 100, differentiable=True) is None
    assert "limit of 20" in exact_limit(21, 1, differentiable=True)
    assert owen_limit([3, 2] + [1] * 17, 6, differentiable=True) is None
    assert "model evaluations" in owen_limit([3, 2] + [1] * 17, 1, differentiable=False)
    assert owen_limit([3, 3, 2, 2] + [1] * 10, 1, differentiable=False) is None
    assert "over its limit" in owen_limit([23, 1], 1, differentiable=True)
