"""Deletion and insertion curves, infidelity: analytic answers and planted dependencies."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import torch

from xai_sandbox.errors import InvalidInputError
from xai_sandbox.explainers import explain
from xai_sandbox.models.registry import register
from xai_sandbox.quality.assess import assess, method_curves
from xai_sandbox.quality.faithfulness import (
    curves,
    explained_output_fn,
    infidelity,
    players_of,
    superpixels,
)


class Linear(torch.nn.Module):
    def __init__(self, w: list[float]) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(len(w), 1, bias=False)
        with torch.no_grad():
            self.lin.weight.copy_(torch.tensor([w]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


class RegionModel(torch.nn.Module):
    """Two logits: a convolution, then the mean of its ReLU over one 8x8 region only (class
    1) against a constant (class 0). Nothing outside the region changes the output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape,
                                               generator=torch.Generator().manual_seed(0)))
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        region = torch.relu(self.conv(x))[:, :, 8:16, 16:24].mean(dim=(1, 2, 3))
        return torch.stack([torch.zeros_like(region), region * 4], dim=1)


def _random_like(e, seed):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    return dataclasses.replace(e, values=rng.normal(size=e.values.shape))


def test_deletion_curve_of_a_linear_model_is_the_remaining_sum() -> None:
    w = [3.0, -1.0, 2.0, 0.5]
    x = np.array([1.0, 2.0, 1.0, 2.0], dtype=np.float32)
    model = register(Linear(w).eval(), model_id="linear", version="1", task="regression")
    e = explain(model, x[None], method="gradient_x_input")
    players = players_of(e, x.shape)
    c = curves(explained_output_fn(model.adapter, e), x, np.zeros(4, np.float32), players)
    contributions = np.array(w) * x                      # 3, -2, 2, 1
    order = np.argsort(-contributions, kind="stable")    # 0, 2, 3, 1
    total = contributions.sum()
    expected_deletion = [(total - contributions[order[:k]].sum()) / total for k in range(5)]
    expected_insertion = [contributions[order[:k]].sum() / total for k in range(5)]
    np.testing.assert_allclose(c.fractions, [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(c.deletion, expected_deletion, rtol=1e-6)
    np.testing.assert_allclose(c.insertion, expected_insertion, rtol=1e-6)
    assert c.output == pytest.approx(total) and c.baseline_output == 0.0


def test_a_random_ranking_has_zero_gap_in_expectation_on_any_model(mlp) -> None:
    # Averaged over every permutation, insertion and deletion areas are equal: exact.
    model = register(mlp, model_id="mlp", version="1", class_names=["a", "b", "c"])
    x = np.random.default_rng(3).normal(size=(1, 6)).astype(np.float32)
    e = explain(model, x, method="integrated_gradients")
    players = players_of(e, (6,))
    fn = explained_output_fn(model.adapter, e)
    gaps = [curves(fn, x[0], np.zeros(6, np.float32), players, order=np.array(p)).gap
            for p in itertools.permutations(range(6))]
    assert abs(np.mean(gaps)) < 1e-9
    assert np.std(gaps) > 0.01                            # single rankings do differ
    right = curves(fn, x[0], np.zeros(6, np.float32), players).gap
    assert right > np.quantile(gaps, 0.9)


def test_planted_tabular_feature_right_explanation_high_random_low() -> None:
    import lightgbm

    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 8))
    y = (X[:, 3] > 0).astype(int)                         # the label is feature 3 alone
    gbm = lightgbm.LGBMClassifier(n_estimators=60, num_leaves=7, verbose=-1, n_jobs=1,
                                  random_state=0).fit(X, y)
    model = register(gbm, model_id="planted", version="1", class_names=["no", "yes"],
                     reference=np.zeros(8), training_data=X)
    gaps, random_gaps, undefined = [], [], 0
    for i, row in enumerate(X[:30]):
        e = explain(model, row[None], method="tree_shap")
        right = method_curves(model, row[None], e)
        if not right["defined"]:
            # The baseline (feature 3 = 0) lands on the input's side: nothing to delete.
            assert right["gap"] is None
            assert right["output"] == pytest.approx(right["baseline_output"])
            undefined += 1
            continue
        gaps.append(right["gap"])
        for seed in range(10):
            random_gaps.append(method_curves(model, row[None],
                                             _random_like(e, 100 * i + seed))["gap"])
    assert len(gaps) >= 10 and undefined >= 1
    assert np.mean(gaps) > 0.7
    assert abs(np.mean(random_gaps)) < 0.15
    assert np.mean(np.array(gaps) > 0.5) >= 0.95


def test_planted_image_region_ig_and_grad_cam_pp_beat_random() -> None:
    model = register(RegionModel().eval(), model_id="region", version="1",
                     class_names=["other", "region"], input_kind="image", sample_shape=(3, 32, 32))
    rng = np.random.default_rng(1)
    for i in range(4):
        x = rng.normal(size=(1, 3, 32, 32)).astype(np.float32)
        for method in ("integrated_gradients", "grad_cam_pp"):
            e = explain(model, x, method=method, target=1)
            right = method_curves(model, x, e, fractions=(0.05, 0.1, 0.2, 0.3, 0.4))
            random = [method_curves(model, x, _random_like(e, s),
                                    fractions=(0.05, 0.1, 0.2, 0.3, 0.4))
                      for s in range(3)]
            assert right["deletion_area"] < min(r["deletion_area"] for r in random), (i, method)
            if method == "integrated_gradients":
                # Grad-CAM++ weighs whole channels, so its map also lights up where those
                # channels fire outside the region: its insertion curve is no better.
                assert right["gap"] > max(r["gap"] for r in random), (i, method)


def test_curves_check_the_input_and_the_fractions(credit) -> None:
    model = credit.lightgbm
    x = credit.data.X[credit.test[:2]]
    e = explain(model, x[:1], method="tree_shap")
    with pytest.raises(InvalidInputError, match="must be the input the explanation"):
        method_curves(model, x[1:2], e)
    with pytest.raises(InvalidInputError, match="fractions"):
        method_curves(model, x[:1], e, fractions=(0.0, 0.5))
    with pytest.raises(InvalidInputError, match="order"):
        method_curves(model, x[:1], e, order=np.arange(3))


def test_grouped_features_move_all_their_one_hot_columns(credit) -> None:
    model = credit.lightgbm
    x = credit.data.X[credit.test[:1]]
    e = explain(model, x, method="tree_shap")
    players = players_of(e, x[0].shape, schema=model.schema)
    assert players.n == len(model.schema.names)
    for g, cols in enumerate(model.schema.groups):
        assert set(np.flatnonzero(players.owner == g)) == set(cols)


def test_image_players_pixels_patches_and_superpixels(cnn, images) -> None:
    model = register(cnn, model_id="cnn", version="1", class_names=["a", "b", "c"],
                     input_kind="image",
                     sample_shape=(3, 8, 8))
    e = explain(model, images[:1], method="saliency")
    pixels = players_of(e, (3, 8, 8))
    assert pixels.n == 64 and pixels.owner.shape == (192,)
    np.testing.assert_allclose(pixels.scores, np.asarray(e.values[0]).sum(axis=0).ravel())
    patches = players_of(e, (3, 8, 8), patch=4)
    assert patches.n == 4
    segments = np.zeros((8, 8), dtype=np.int64)
    segments[:, 4:] = 1
    halves = players_of(e, (3, 8, 8), segments=segments)
    assert halves.n == 2
    heat = np.asarray(e.values[0]).sum(axis=0)
    assert halves.scores[1] == pytest.approx(heat[:, 4:].mean())


def test_infidelity_is_zero_for_exact_attributions_of_a_linear_model() -> None:
    w = [3.0, -1.0, 2.0, 0.5, 1.5]
    x = np.array([1.0, 2.0, 1.0, 2.0, -1.0], dtype=np.float32)
    model = register(Linear(w).eval(), model_id="linear", version="1", task="regression")
    e = explain(model, x[None], method="gradient_x_input")
    fn = explained_output_fn(model.adapter, e)
    players = players_of(e, x.shape)
    zero = np.zeros(5, np.float32)
    exact = infidelity(fn, x, zero, players, n_perturb=64)
    assert exact < 1e-9
    wrong = infidelity(fn, x, zero, players_of(_random_like(e, 0), x.shape), n_perturb=64)
    assert wrong > 0.1
    # Seeded: the same draws give the same number.
    assert infidelity(fn, x, zero, players_of(_random_like(e, 0), x.shape),
                      n_perturb=64) == wrong


def test_assess_block_reports_every_method_and_agreement(credit) -> None:
    model = credit.mlp
    x = credit.data.X[credit.test[:1]]
    es = [explain(model, x, method=m, random_state=3)
          for m in ("integrated_gradients", "exact_shapley", "kernel_shap")]
    again = explain(model, x, method="kernel_shap", random_state=4)
    block = assess(model, x, es, reruns=[again])
    assert set(block["methods"]) == {"integrated_gradients", "exact_shapley", "kernel_shap"}
    assert block["methods"]["kernel_shap"]["seed_stability"]["spearman"] > 0.8
    assert block["methods"]["exact_shapley"]["seed_stability"] is None
    assert len(block["agreement"]["pairs"]) == 3
    assert block["agreement"]["min_top_k_overlap"] >= 0.5
    assert block["verdict"] == {"reliable": True, "why": [], "action": "show"}
    ig = block["methods"]["integrated_gradients"]
    assert ig["curves"]["gap"] > 0.3 and len(ig["curves"]["fractions"]) == 21


def test_efficientnet_ig_and_grad_cam_pp_beat_random_on_deletion(efficientnet) -> None:
    """On the real photos, deleting pixels in the explanation's order lowers the class
    logit faster than deleting them in a random order of the same form: random pixel maps
    for IG, random 7x7 maps upsampled like Grad-CAM++'s own."""
    from xai_sandbox.demos.images import PHOTOS, load_photo, preprocess

    fractions = (0.05, 0.1, 0.2, 0.3, 0.4)
    ours: dict[str, list[float]] = {"integrated_gradients": [], "grad_cam_pp": []}
    null: dict[str, list[float]] = {"integrated_gradients": [], "grad_cam_pp": []}
    for photo in PHOTOS:
        x = preprocess(load_photo(photo))
        for method in ours:
            e = explain(efficientnet, x, method=method, n_steps=32) if method == \
                "integrated_gradients" else explain(efficientnet, x, method=method)
            ours[method].append(method_curves(efficientnet, x, e,
                                              fractions=fractions)["deletion_area"])
            for seed in range(3):
                gen = torch.Generator().manual_seed(seed)
                if method == "grad_cam_pp":
                    small = torch.rand(1, 1, 7, 7, generator=gen)
                    values = torch.nn.functional.interpolate(small, (224, 224),
                                                             mode="bilinear").numpy()
                else:
                    values = torch.randn(1, 3, 224, 224, generator=gen).numpy()
                random_e = dataclasses.replace(e, values=values)
                null[method].append(method_curves(efficientnet, x, random_e,
                                                  fractions=fractions)["deletion_area"])
    for method in ours:
        assert np.mean(ours[method]) < np.mean(null[method]), method
    # IG beats random pixels on every photo.
    per_photo = np.array(null["integrated_gradients"]).reshape(len(PHOTOS), 3).mean(axis=1)
    assert (np.array(ours["integrated_gradients"]) < per_photo).all()


def test_superpixel_curves_on_a_real_photo(efficientnet, cat) -> None:
    pixels, x = cat
    labels = superpixels(pixels, n_segments=60)
    assert labels.shape == (224, 224) and 30 <= len(np.unique(labels)) <= 90
    e = explain(efficientnet, x, method="grad_cam_pp")
    players = players_of(e, x[0].shape, segments=labels)
    assert players.n == len(np.unique(labels))
    c = curves(explained_output_fn(efficientnet.adapter, e), x[0], np.zeros_like(x[0]),
               players, fractions=(0.1, 0.3))
    assert c.kind == "superpixels" and c.defined and len(c.fractions) == 6
    with pytest.raises(InvalidInputError, match="pixels"):
        superpixels(pixels[..., 0])
