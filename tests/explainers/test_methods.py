"""Analytic answers for the remaining methods on tiny models."""

import numpy as np
import pytest
import torch

from helpers import make_cnn, make_mlp
from xai_sandbox.errors import ExplanationError, InvalidInputError, UnsupportedModelError
from xai_sandbox.explainers import explain


@pytest.fixture
def linear():
    lin = torch.nn.Linear(4, 3).eval()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -2.0, 0.5, 0.0], [0.3, 0.3, -1.0, 2.0],
                                       [-1.0, 1.0, 1.0, 1.0]]))
        lin.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    return lin


X = np.array([[1.0, 2.0, -1.0, 0.5], [0.0, -1.0, 2.0, 1.0]], dtype=np.float32)
B = np.array([[0.5, 0.0, 0.0, 1.0]], dtype=np.float32)


def test_saliency_and_gradient_x_input(linear):
    w = linear.weight.detach().numpy()
    sal = explain(linear, X, method="saliency", target=1)
    np.testing.assert_allclose(sal.values, np.abs(np.broadcast_to(w[1], X.shape)), rtol=1e-6)
    signed = explain(linear, X, method="saliency", target=1, absolute=False)
    np.testing.assert_allclose(signed.values, np.broadcast_to(w[1], X.shape), rtol=1e-6)
    gxi = explain(linear, X, method="gradient_x_input", target=2)
    np.testing.assert_allclose(gxi.values, X * w[2], rtol=1e-6)
    assert gxi.baseline is None


def test_saliency_says_it_is_the_absolute_gradient_by_default():
    from typer.testing import CliRunner

    from xai_sandbox.cli import app
    from xai_sandbox.explainers import EXPLAINERS, available_methods

    cls = EXPLAINERS["saliency"]
    assert "absolute" in cls.__doc__ and "by default" in cls.__doc__
    assert dict((n, s) for n, _, s in available_methods())["saliency"].startswith(
        "absolute gradient |df/dx|")
    out = CliRunner().invoke(app, ["methods"], env={"COLUMNS": "250"})
    assert out.exit_code == 0
    line = next(x for x in out.output.splitlines() if "saliency" in x)
    assert "absolute gradient" in line and "by default" in line
    with pytest.raises(InvalidInputError, match="absolute: must be true or false"):
        explain(torch.nn.Linear(4, 2).eval(), X, method="saliency", absolute="no")


def test_gradient_x_input_with_a_baseline_is_x_minus_b_times_the_gradient(linear):
    w = linear.weight.detach().numpy()
    e = explain(linear, X, method="gradient_x_input", target=2, baselines=B)
    np.testing.assert_allclose(e.values, (X - B) * w[2], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(e.baseline, B)
    # On a linear model it is complete: the attributions sum to f(x) - f(b).
    out = linear(torch.as_tensor(X)).detach().numpy()[:, 2]
    at_b = linear(torch.as_tensor(B)).detach().numpy()[:, 2]
    np.testing.assert_allclose(e.values.sum(axis=1), out - at_b, rtol=1e-5)
    # One baseline per row.
    per_row = np.stack([B[0], -B[0]])
    e = explain(linear, X, method="gradient_x_input", target=0, baselines=per_row)
    np.testing.assert_allclose(e.values, (X - per_row) * w[0], rtol=1e-6, atol=1e-7)


def test_gradient_x_input_from_zero_is_captums_input_x_gradient():
    from captum.attr import InputXGradient

    net = make_mlp()
    rows = np.random.default_rng(4).normal(size=(5, 6)).astype(np.float32)
    theirs = InputXGradient(net).attribute(torch.tensor(rows, requires_grad=True),
                                           target=1).detach().numpy()
    plain = explain(net, rows, method="gradient_x_input", target=1)
    zero = explain(net, rows, method="gradient_x_input", target=1, baselines=0.0)
    np.testing.assert_allclose(plain.values, theirs, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(zero.values, theirs, rtol=1e-6, atol=1e-7)
    # The gradient is the input's, not the baseline's: on a ReLU network a baseline moves
    # the multiplier only.
    b = np.full((1, 6), 0.3, dtype=np.float32)
    shifted = explain(net, rows, method="gradient_x_input", target=1, baselines=b)
    grad = theirs / rows
    np.testing.assert_allclose(shifted.values, (rows - b) * grad, rtol=1e-4, atol=1e-6)


def test_gradient_x_input_on_tokens_with_baseline_ids():
    from xai_sandbox.models import TorchAdapter

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(12, 5), torch.nn.Flatten(),
                                torch.nn.Linear(15, 2)).eval()
    adapter = TorchAdapter(model, input_kind="tokens", embedding_layer="0", sample_shape=(3,))
    ids, pad = np.array([[3, 7, 1], [4, 4, 9]]), np.array([[0, 0, 0]])
    e = explain(adapter, ids, method="gradient_x_input", target=1, baselines=pad)
    # Linear in the embedding: (emb(x) - emb(b)) * grad is exact, as IG is.
    ig = explain(adapter, ids, method="integrated_gradients", target=1, baselines=pad)
    np.testing.assert_allclose(e.values, ig.values, rtol=1e-4, atol=1e-6)
    f = model(torch.as_tensor(ids)).detach().numpy()[:, 1]
    f_b = model(torch.as_tensor(pad)).detach().numpy()[:, 1]
    np.testing.assert_allclose(e.values.sum(axis=1), f - f_b, rtol=1e-5, atol=1e-6)
    plain = explain(adapter, ids, method="gradient_x_input", target=1)
    assert not np.allclose(plain.values, e.values)


def test_estimators_are_explained_in_probability_space():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    Xs = rng.normal(size=(200, 4))
    est = LogisticRegression().fit(Xs, (Xs[:, 0] > 0).astype(int))
    for method, params in [("occlusion", {}), ("lime", {"n_samples": 60}),
                           ("exact_shapley", {}), ("kernel_shap", {"n_samples": 40})]:
        e = explain(est, Xs[:2], method=method, target=1, random_state=0,
                    baselines=np.zeros((1, 4)), **params)
        assert e.output_space == "probability", method
    c = explain(est, Xs[:2], method="contrastive", target=1, foil=0,
                base_method="occlusion", baselines=np.zeros((1, 4)))
    assert c.output_space == "contrast" and c.parameters["contrast_of"] == "probability"


def test_deeplift_on_a_linear_model_is_exact(linear):
    e = explain(linear, X, method="deeplift", target=0, baselines=B)
    w = linear.weight.detach().numpy()[0]
    np.testing.assert_allclose(e.values, (X - B) * w, rtol=1e-5, atol=1e-6)
    assert np.abs(e.delta).max() < 1e-5


def test_deeplift_is_complete_on_a_relu_network(rows):
    e = explain(make_mlp(), rows, method="deeplift", target=1)
    assert e.completeness_error < 1e-4


def test_lrp_conserves_relevance_on_a_bias_free_relu_network(rows):
    net = make_mlp()
    for layer in (net[0], net[2]):
        layer.bias.data.zero_()
    e = explain(net, rows, method="lrp", target=0)
    out = net(torch.as_tensor(rows))[:, 0].detach().numpy()
    np.testing.assert_allclose(e.values.sum(axis=1), out, rtol=1e-3, atol=1e-4)
    # Captum's rule attributes are removed again.
    assert not any("rule" in vars(m) for m in net.modules())


def test_lrp_refuses_layers_without_a_rule():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.GELU(),
                                torch.nn.Linear(4, 2)).eval()
    with pytest.raises(UnsupportedModelError, match=r"LRP supports only.*1: GELU"):
        explain(model, X, method="lrp", target=0)


def test_lrp_refuses_when_relevance_is_not_conserved():
    class Residual(torch.nn.Module):
        """A residual block: LRP's rules do not see the skip connection."""

        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Linear(4, 4)
            self.relu = torch.nn.ReLU()
            self.b = torch.nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(self.relu(self.a(x)) + 5.0 * x)

    torch.manual_seed(0)
    with pytest.raises(ExplanationError, match="relevance is not conserved"):
        explain(Residual().eval(), X, method="lrp", target=0, max_conservation_error=0.05)


def test_smoothgrad_without_noise_is_the_base_method(rows):
    model = make_mlp()
    base = explain(model, rows, method="saliency", target=1)
    smooth = explain(model, rows, method="smoothgrad", target=1, noise_level=0.0, n_samples=3,
                     random_state=0)
    np.testing.assert_allclose(smooth.values, base.values, rtol=1e-6)


def test_smoothgrad_matches_the_expected_gradient_of_a_cubic():
    class Cubic(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x**3).sum(dim=1, keepdim=True)

    x = np.array([[0.0, 1.0, 2.0]])
    sigma = 0.1 * (x.max() - x.min())
    e = explain(Cubic().eval(), x, method="smoothgrad", target=0, base_method="saliency",
                base_params={"absolute": False}, n_samples=4000, noise_level=0.1,
                random_state=0)
    # E[3 (x + eps)^2] = 3 x^2 + 3 sigma^2
    np.testing.assert_allclose(e.values[0], 3 * x[0] ** 2 + 3 * sigma**2, atol=0.05)


def test_smoothgrad_over_integrated_gradients(rows):
    e = explain(make_mlp(), rows, method="smoothgrad", target=2,
                base_method="integrated_gradients", base_params={"n_steps": 16}, n_samples=3,
                random_state=1)
    assert e.values.shape == rows.shape
    assert e.parameters["base"]["method"] == "integrated_gradients"


def test_smoothgrad_refuses_non_gradient_bases(rows):
    with pytest.raises(InvalidInputError, match="base_method: must be a gradient method"):
        explain(make_mlp(), rows, method="smoothgrad", base_method="occlusion")


def test_contrastive_is_the_difference_of_the_two_classes(linear):
    e = explain(linear, X, method="contrastive", target=2, foil=0, baselines=B,
                base_method="integrated_gradients", base_params={"n_steps": 8})
    w = linear.weight.detach().numpy()
    np.testing.assert_allclose(e.values, (X - B) * (w[2] - w[0]), rtol=1e-5, atol=1e-6)
    assert e.output_space == "contrast" and e.parameters["foil"] == 0
    out = linear(torch.as_tensor(X)).detach().numpy()
    np.testing.assert_allclose(e.explained_output(), out[:, 2] - out[:, 0], rtol=1e-6)


def test_contrastive_with_a_perturbation_base_on_trees():
    import lightgbm

    rng = np.random.default_rng(0)
    Xt = rng.normal(size=(300, 4))
    y = np.digitize(Xt[:, 0] + Xt[:, 1], [-0.5, 0.5])
    est = lightgbm.LGBMClassifier(n_estimators=20, verbose=-1).fit(Xt, y)
    e = explain(est, Xt[:2], method="contrastive", target=2, foil=0,
                base_method="exact_shapley", baselines=np.zeros((1, 4)))
    p = est.predict_proba(Xt[:2])
    np.testing.assert_allclose(e.values.sum(axis=1) + e.expected_value, p[:, 2] - p[:, 0],
                               atol=1e-9)


@pytest.mark.parametrize("foil", [2, 7, -1])
def test_contrastive_foil_errors(linear, foil):
    from xai_sandbox.errors import InvalidTargetError

    with pytest.raises(InvalidTargetError, match="foil: must"):
        explain(linear, X, method="contrastive", target=2, foil=foil)


def test_occlusion_on_a_linear_model_is_weight_times_difference(linear):
    e = explain(linear, X, method="occlusion", target=1, baselines=B)
    w = linear.weight.detach().numpy()[1]
    np.testing.assert_allclose(e.values, (X - B) * w, rtol=1e-5, atol=1e-6)


def test_occlusion_on_images_counts_patches(images):
    e = explain(make_cnn(), images, method="occlusion", target=0, window=4)
    assert e.values.shape == images.shape
    # Each 4x4 patch (all channels) carries one value.
    patch = e.values[0, :, :4, :4]
    assert np.allclose(patch, patch.flat[0])


def test_lime_recovers_a_linear_model_on_credit_groups(credit):
    X0 = credit.data.X[credit.test[:1]]
    lime = explain(credit.mlp, X0, method="lime", target="bad", n_samples=3000, alpha=1e-4,
                   random_state=0)
    shapley = explain(credit.mlp, X0, method="exact_shapley", target="bad")
    assert lime.values.shape == (1, 20)
    top_shapley = {n for n, _ in shapley.ranked(0, 3)}
    top_lime = {n for n, _ in lime.ranked(0, 5)}
    assert top_shapley <= top_lime


def test_lime_on_images_uses_patches(images):
    e = explain(make_cnn(), images[:1], method="lime", target=0, patch=4, n_samples=50,
                random_state=0)
    assert e.values.shape == (1, 3, 8, 8)
    assert np.allclose(e.values[0, :, :4, :4], e.values[0, 0, 0, 0])
