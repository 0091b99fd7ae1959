"""owen_shapley: exact Owen values, Shapley values under declared unions of features.

Checked against the definition (the average marginal contribution over the orders of the
features in which every union's members come together), against analytic answers (a
product game, a linear model), against exact Shapley values where the two coincide (every
feature its own union, or one union of all), and against the Shapley values of the unions
themselves (a union's members add up to its value among the unions)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xai_sandbox.errors import InvalidInputError
from xai_sandbox.explainers import explain
from xai_sandbox.explainers.shapley import owen_coalitions
from xai_sandbox.models.adapters import TorchAdapter


def adapter(module: torch.nn.Module, d: int) -> TorchAdapter:
    return TorchAdapter(module.eval(), input_kind="tabular", sample_shape=(d,),
                        output_space="logit")


class Product(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x.prod(dim=1)
        return torch.stack([-out, out], dim=1)


def mlp(d: int, seed: int) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(d, 5, dtype=torch.float64), torch.nn.Tanh(),
                              torch.nn.Linear(5, 2, dtype=torch.float64))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
    return net


def by_definition(module: torch.nn.Module, x: np.ndarray, bg: np.ndarray,
                  unions: list[list[int]]) -> np.ndarray:
    """Owen values of one row from their definition: marginal contributions averaged over
    the orders in which each union's members are adjacent."""
    d = x.shape[0]

    def v(members: frozenset[int]) -> float:
        take = np.array([i in members for i in range(d)])
        rows = np.where(take[None], x[None], bg)
        with torch.no_grad():
            return float(module(torch.as_tensor(rows))[:, 1].mean())

    table = {frozenset(s): v(frozenset(s)) for k in range(d + 1)
             for s in itertools.combinations(range(d), k)}
    total, count = np.zeros(d), 0
    for order in itertools.permutations(range(d)):
        at = {p: i for i, p in enumerate(order)}
        if any(max(at[p] for p in u) - min(at[p] for p in u) != len(u) - 1 for u in unions):
            continue
        count += 1
        for i, p in enumerate(order):
            total[p] += table[frozenset(order[:i + 1])] - table[frozenset(order[:i])]
    return total / count


def test_a_product_game_splits_between_unions_first():
    # v(S) = 1 only for all three: Shapley gives 1/3 each; with unions {a, b} and {c} the
    # unions split 1/2 and 1/2 and a and b share theirs.
    names = ["a", "b", "c"]
    e = explain(adapter(Product(), 3), np.ones((1, 3)), method="owen_shapley",
                baselines=np.zeros((1, 3)), target=1, feature_names=names,
                unions={"ab": ["a", "b"]})
    np.testing.assert_allclose(e.values, [[0.25, 0.25, 0.5]], atol=1e-12)
    s = explain(adapter(Product(), 3), np.ones((1, 3)), method="exact_shapley",
                baselines=np.zeros((1, 3)), target=1, feature_names=names)
    np.testing.assert_allclose(s.values, [[1 / 3] * 3], atol=1e-7)
    assert e.parameters["union_sizes"] == {"a, b": 2}
    assert e.parameters["unions"] == {"ab": ["a", "b"]}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(d=st.integers(2, 6), seed=st.integers(0, 10_000), rows=st.integers(1, 3),
       data=st.data())
def test_owen_values_are_their_definition(d, seed, rows, data):
    labels = data.draw(st.lists(st.integers(0, d - 1), min_size=d, max_size=d))
    unions = [[i for i in range(d) if labels[i] == u] for u in sorted(set(labels))]
    names = [f"f{i}" for i in range(d)]
    module = mlp(d, seed)
    rng = np.random.default_rng(seed)
    x, bg = rng.normal(size=(2, d)), rng.normal(size=(rows, d))
    e = explain(adapter(module, d), x, method="owen_shapley", background=bg, target=1,
                feature_names=names,
                unions={f"u{k}": [names[i] for i in u] for k, u in enumerate(unions)})
    for r in range(2):
        np.testing.assert_allclose(e.values[r], by_definition(module, x[r], bg, unions),
                                   rtol=1e-9, atol=1e-12)
    assert np.abs(e.completeness_error).max() < 1e-9
    assert e.parameters["coalitions"] == owen_coalitions([len(u) for u in unions])


def test_where_owen_and_shapley_coincide_and_how_unions_add_up():
    d = 6
    names = [f"f{i}" for i in range(d)]
    module = mlp(d, 4)
    rng = np.random.default_rng(4)
    x, bg = rng.normal(size=(3, d)), rng.normal(size=(4, d))
    model = adapter(module, d)
    common = {"background": bg, "target": 1, "feature_names": names}
    shapley = explain(model, x, method="exact_shapley", **common)
    for unions in (None, {"all": names}):
        owen = explain(model, x, method="owen_shapley", unions=unions, **common)
        np.testing.assert_allclose(owen.values, shapley.values, rtol=1e-9, atol=1e-12)
    unions = {"u": ["f0", "f3", "f4"], "v": ["f1", "f5"]}
    owen = explain(model, x, method="owen_shapley", unions=unions, **common)
    assert not np.allclose(owen.values, shapley.values)
    groups = {**unions, "f2": ["f2"]}
    quotient = explain(model, x, method="exact_shapley", groups=groups, **common)
    for k, members in groups.items():
        np.testing.assert_allclose(
            owen.values[:, [names.index(m) for m in members]].sum(axis=1),
            quotient.values[:, list(quotient.feature_names).index(k)], rtol=1e-9, atol=1e-12)
    # A linear model: every structure gives w (x - E bg).
    linear = torch.nn.Sequential(torch.nn.Linear(d, 2, dtype=torch.float64))
    lin = explain(adapter(linear, d), x, method="owen_shapley", unions=unions, **common)
    w = linear[0].weight.detach().numpy()[1]
    np.testing.assert_allclose(lin.values, w * (x - bg.mean(axis=0)), rtol=1e-9, atol=1e-12)


def test_the_cost_is_counted_and_capped():
    assert owen_coalitions([1] * 5) == 2**5
    # 19 unions (a loan group of 3 and a life-stage group of 2 among 22 features).
    assert owen_coalitions([3, 2] + [1] * 17) == 2**19 + 2**18 * (6 + 2)
    d = 8
    names = [f"f{i}" for i in range(d)]
    x = np.zeros((1, d))
    model = adapter(mlp(d, 0), d)
    with pytest.raises(InvalidInputError, match=r"unions.*256 coalitions.*max_coalitions=100"):
        explain(model, x, method="owen_shapley", feature_names=names, max_coalitions=100,
                unions={"a": names[:4]})
    assert owen_coalitions([4, 1, 1, 1, 1]) == 256 == 2**5 + 2**4 * 14
    assert math.log2(owen_coalitions([1] * 20)) == 20


@pytest.mark.parametrize(("unions", "named", "rule"), [
    (["f0"], "unions", "mapping"),
    ({"a": "f0"}, r"unions\['a'\]", "non-empty list"),
    ({"a": []}, r"unions\['a'\]", "non-empty list"),
    ({"a": ["f9"]}, r"unions\['a'\]", "must name features"),
    ({"a": ["f0", "f1"], "b": ["f1"]}, r"unions\['b'\]", "another union \\('a'\\)"),
])
def test_bad_unions_are_named(unions, named, rule):
    names = [f"f{i}" for i in range(3)]
    with pytest.raises(InvalidInputError, match=named) as caught:
        explain(adapter(mlp(3, 0), 3), np.zeros((1, 3)), method="owen_shapley",
                feature_names=names, unions=unions)
    assert caught.match(rule)
    with pytest.raises(InvalidInputError, match="max_coalitions"):
        explain(adapter(mlp(3, 0), 3), np.zeros((1, 3)), method="owen_shapley",
                feature_names=names, max_coalitions=True)
