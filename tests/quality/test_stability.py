"""Rank stability, max-sensitivity, method agreement and the randomisation sanity check."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import make_cnn
from xai_sandbox.errors import InvalidInputError
from xai_sandbox.explainers import explain
from xai_sandbox.explainers.base import EXPLAINERS, Explainer, Problem, Result
from xai_sandbox.models.fingerprint import fingerprint_module
from xai_sandbox.models.registry import register
from xai_sandbox.quality.stability import (
    cascade_layers,
    max_sensitivity,
    method_agreement,
    randomisation_check,
    rank_correlation,
    seed_stability,
    top_k_overlap,
)


def test_rank_correlation_analytic_cases() -> None:
    a = np.array([0.1, 0.5, -0.2, 0.9])
    assert rank_correlation(a, a) == {"spearman": pytest.approx(1.0),
                                      "kendall": pytest.approx(1.0)}
    assert rank_correlation(a, -a)["spearman"] == pytest.approx(-1.0)
    assert rank_correlation(a, -a, absolute=True)["kendall"] == pytest.approx(1.0)
    assert rank_correlation(a, np.zeros(4)) == {"spearman": 0.0, "kendall": 0.0}
    # One swapped adjacent pair of four: Kendall 1 - 2 * 1/6.
    assert rank_correlation([1, 2, 3, 4], [1, 3, 2, 4])["kendall"] == pytest.approx(2 / 3)
    with pytest.raises(InvalidInputError, match="shape"):
        rank_correlation(a, a[:3])


def test_top_k_overlap() -> None:
    a = [5, 4, 3, 2, 1]
    assert top_k_overlap(a, a, 2) == 1.0
    assert top_k_overlap(a, [1, 2, 3, 4, 5], 2) == 0.0
    assert top_k_overlap(a, [-5, 1, 4, 0, 0], 2) == 0.5      # by magnitude
    with pytest.raises(InvalidInputError, match="k"):
        top_k_overlap(a, a, 6)


def test_agreement_and_seed_stability_on_the_credit_mlp(credit) -> None:
    model = credit.mlp
    x = credit.data.X[credit.test[:1]]
    ig = explain(model, x, method="integrated_gradients")
    exact = explain(model, x, method="exact_shapley")
    ks = [explain(model, x, method="kernel_shap", random_state=s, n_samples=400)
          for s in (1, 2)]
    agreement = method_agreement([ig, exact, ks[0]], k=4)
    assert {tuple(p["methods"]) for p in agreement["pairs"]} == {
        ("integrated_gradients", "exact_shapley"), ("integrated_gradients", "kernel_shap"),
        ("exact_shapley", "kernel_shap")}
    assert agreement["min_top_k_overlap"] >= 0.5
    stable = seed_stability(*ks)
    assert stable["seeds"] == [1, 2] and stable["spearman"] > 0.7
    with pytest.raises(InvalidInputError, match="same method"):
        seed_stability(ig, exact)


def test_max_sensitivity_of_ig_on_a_linear_model_matches_the_analytic_bound() -> None:
    w = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    lin = torch.nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(w)
    model = register(lin.eval(), model_id="lin", version="1", task="regression")
    x = np.array([[1.0, 2.0, -1.0, 0.5]], dtype=np.float32)
    out = max_sensitivity(model, x, "integrated_gradients", radius=0.1, n_perturb=32,
                          baselines=0.0)
    # IG of a linear model from 0 is w * x, so a move d changes it by w * d:
    # sensitivity = max ||w * d|| / ||w * x|| <= 0.1 * ||w|| / ||w * x||.
    bound = 0.1 * float(np.linalg.norm(w.numpy())) / float(np.linalg.norm(w.numpy() * x))
    assert 0.3 * bound < out["max_sensitivity"] <= bound + 1e-6
    assert out["noise_spearman"]["min"] > 0.9


def test_max_sensitivity_leaves_one_hot_columns_alone(credit) -> None:
    model = credit.mlp
    x = credit.data.X[credit.test[:1]]
    seen: list[np.ndarray] = []
    import xai_sandbox.quality.stability as stability

    original = stability.explain

    def spy(m, rows, **kw):  # type: ignore[no-untyped-def]
        seen.append(np.array(rows))
        return original(m, rows, **kw)

    stability.explain = spy
    try:
        out = max_sensitivity(model, x, "integrated_gradients", n_perturb=4)
    finally:
        stability.explain = original
    moved = np.abs(seen[-1] - x).max(axis=0)
    categorical = [c for spec, cols in zip(model.schema.features, model.schema.groups,
                                           strict=True) if spec.kind == "categorical"
                   for c in cols]
    assert (moved[categorical] == 0).all() and moved.max() > 0
    assert out["max_sensitivity"] >= 0


class _InputMagnitude(Explainer):
    """Explains nothing about the model: |x| (an edge detector would do the same)."""

    name = "test_input_magnitude"
    summary = "test only"

    def run(self, problem: Problem) -> Result:
        return Result(values=np.abs(problem.inputs).astype(np.float64))


@pytest.fixture
def input_magnitude():  # type: ignore[no-untyped-def]
    EXPLAINERS[_InputMagnitude.name] = _InputMagnitude
    yield _InputMagnitude.name
    EXPLAINERS.pop(_InputMagnitude.name)


def test_randomisation_check_passes_ig_and_fails_a_model_blind_method(credit,
                                                                      input_magnitude) -> None:
    model = credit.mlp
    X = credit.data.X[credit.test[:8]]
    ig = randomisation_check(model, X, "integrated_gradients", layers=None)
    assert ig["ran"] and ig["test"] == "cascading parameter randomisation"
    assert [s["randomised_down_to"] for s in ig["stages"]] == ["4", "2", "0"]
    assert ig["passed"] and ig["final"] < 0.5
    # Each stage randomises more: the correlation falls.
    assert ig["stages"][0]["spearman"] > ig["stages"][-1]["spearman"]
    blind = randomisation_check(model, X, input_magnitude, layers=None)
    assert not blind["passed"] and blind["final"] == pytest.approx(1.0)
    # The trained model is left as it was.
    assert np.array_equal(explain(model, X[:1], method="integrated_gradients").values,
                          explain(model, X[:1], method="integrated_gradients").values)


def test_data_randomisation_for_a_tree_model(credit) -> None:
    model = credit.lightgbm
    X = credit.data.X[credit.test[:8]]
    training = (credit.data.X[credit.train], credit.data.y[credit.train])
    result = randomisation_check(model, X, "tree_shap", training=training)
    assert result["test"] == "data randomisation" and result["ran"]
    assert result["passed"]
    without = randomisation_check(model, X, "tree_shap")
    assert without["ran"] is False and without["passed"] is None


# ---------------------------------------------------------------------------- image cascade
class _FeatureEnergy(Explainer):
    """The channel sum of the last convolution's activations: a map that depends on the
    features but not on the classifier layer (what a class-activation map degenerates to
    when its channel weights hardly matter)."""

    name = "test_feature_energy"
    summary = "test only"

    def run(self, problem: Problem) -> Result:
        net = problem.adapter.torch_module()
        with torch.no_grad():
            features = net[:4](problem.tensor(problem.inputs))
        return Result(values=features.sum(dim=1, keepdim=True).double().numpy())


@pytest.fixture
def feature_energy():  # type: ignore[no-untyped-def]
    EXPLAINERS[_FeatureEnergy.name] = _FeatureEnergy
    yield _FeatureEnergy.name
    EXPLAINERS.pop(_FeatureEnergy.name)


@pytest.fixture(scope="module")
def cnn():  # type: ignore[no-untyped-def]
    model = register(make_cnn(), model_id="cnn", version="1", class_names=list("abc"),
                     input_kind="image", sample_shape=(3, 16, 16))
    images = np.random.default_rng(0).normal(size=(4, 3, 16, 16)).astype(np.float32)
    return model, images


class _Blocks(torch.nn.Module):
    """A stem, a ModuleList of blocks and a head, as EfficientNet lays them out."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.blocks = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.BatchNorm2d(4))
            for _ in range(2))
        self.head = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = torch.relu(block(x))
        return self.head(x.mean(dim=(2, 3)))


def test_cascade_layers_run_from_the_classifier_down_block_by_block() -> None:
    assert cascade_layers(make_cnn()) == [("6", ["6"]), ("2", ["2"]), ("0", ["0"])]
    assert cascade_layers(_Blocks()) == [
        ("head", ["head"]), ("blocks.1", ["blocks.1.0", "blocks.1.1"]),
        ("blocks.0", ["blocks.0.0", "blocks.0.1"]), ("stem", ["stem"])]


def test_image_cascade_passes_saliency_and_leaves_the_model_alone(cnn) -> None:
    model, images = cnn
    before = {k: v.clone() for k, v in model.adapter.torch_module().state_dict().items()}
    check = randomisation_check(model, images, "saliency")
    assert check["statistic"] == "spearman_abs" and check["rule"] == "classifier"
    assert [s["randomised_down_to"] for s in check["stages"]] == ["6", "2", "0"]
    assert check["passed"] and check["why"] == []
    assert check["classifier"] == check["stages"][0]["spearman_abs"] < 0.5
    after = model.adapter.torch_module().state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert fingerprint_module(model.adapter.torch_module()) == model.fingerprint
    top = randomisation_check(model, images, "saliency", layers=1)
    assert [s["randomised_down_to"] for s in top["stages"]] == ["6"]


def test_a_map_that_ignores_the_classifier_layer_fails_the_image_rule(cnn, feature_energy
                                                                      ) -> None:
    model, images = cnn
    check = randomisation_check(model, images, feature_energy)
    # Randomising the classifier leaves the map exactly as it was; deeper layers move it.
    assert check["classifier"] == pytest.approx(1.0)
    assert check["final"] < 0.5
    assert not check["passed"]
    assert len(check["why"]) == 1 and "classifier layer (6)" in check["why"][0]
    # Judged only by the end of the cascade (the tabular rule) it would pass.
    assert randomisation_check(model, images, feature_energy, rule="final")["passed"]


def test_randomisation_check_arguments(cnn) -> None:
    model, images = cnn
    with pytest.raises(InvalidInputError, match="rule"):
        randomisation_check(model, images, "saliency", rule="middle")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="statistic"):
        randomisation_check(model, images, "saliency",
                            statistic="pearson")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="layers"):
        randomisation_check(model, images, "saliency", layers=0)
    with pytest.raises(InvalidInputError, match="threshold"):
        randomisation_check(model, images, "saliency", threshold=2.0)
