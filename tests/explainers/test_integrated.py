import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients as CaptumIG

from helpers import make_mlp
from xai_sandbox.explainers import explain
from xai_sandbox.explainers.integrated import gauss_legendre, integrated_gradients


def test_linear_model_gets_weight_times_difference():
    lin = torch.nn.Linear(4, 2).eval()
    x = np.array([[1.0, -2.0, 0.5, 3.0]], dtype=np.float32)
    b = np.array([[0.5, 0.5, 0.5, 0.5]], dtype=np.float32)
    e = explain(lin, x, method="integrated_gradients", target=1, baselines=b, n_steps=7)
    w = lin.weight.detach().numpy()[1]
    np.testing.assert_allclose(e.values[0], w * (x[0] - b[0]), rtol=1e-6)
    assert abs(e.delta[0]) < 1e-5


def test_quadratic_model_matches_the_closed_form():
    class Square(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x**2).sum(dim=1, keepdim=True)

    x = np.array([[1.0, -2.0, 3.0]])
    # grad = 2 (a x); integral over a of 2 a x = x, times (x - 0): x^2 exactly.
    e = explain(Square().eval(), x, method="integrated_gradients", target=0, n_steps=4)
    np.testing.assert_allclose(e.values[0], x[0] ** 2, rtol=1e-6)


def test_gauss_legendre_nodes_on_unit_interval():
    a, w = gauss_legendre(5)
    assert np.all((a > 0) & (a < 1)) and abs(w.sum() - 1) < 1e-12
    assert abs(np.dot(w, a**9) - 0.1) < 1e-12  # exact for degree 2n - 1


def test_batched_ig_equals_captum_row_by_row(credit):
    X = credit.data.X[credit.test[:25]].astype(np.float32)
    ref_row = credit.mlp.reference
    e = explain(credit.mlp, X, method="integrated_gradients", target=1, group_features=False,
                n_steps=50)
    ig = CaptumIG(credit.mlp.adapter.module)
    rows = [ig.attribute(torch.as_tensor(X[i : i + 1]), baselines=torch.as_tensor(ref_row,
                                                                                  dtype=torch.float32),
                         target=1, n_steps=50).detach().numpy() for i in range(len(X))]
    np.testing.assert_allclose(e.values, np.concatenate(rows), atol=1e-5)


def test_completeness_on_the_german_credit_mlp(credit):
    X = credit.data.X[credit.test[:50]]
    e = explain(credit.mlp, X, method="integrated_gradients", target="bad")
    gap = e.explained_output() - e.expected_value
    assert np.all(np.abs(e.delta) <= 0.01 * np.abs(gap))
    # Grouped by feature: 20 features, same sums.
    assert e.feature_names == credit.data.schema.names
    np.testing.assert_allclose(e.values.sum(axis=1), gap + e.delta, rtol=1e-5, atol=1e-5)


def test_adaptive_reaches_the_tolerance_on_efficientnet(efficientnet, cat):
    e = explain(efficientnet, cat[1], method="integrated_gradients", target=285,
                n_steps="auto", tolerance=0.01)
    assert e.completeness_error <= 0.01
    assert e.values.shape == (1, 3, 224, 224)
    passes = e.parameters["passes_per_row"][0]
    assert 9 <= passes <= 256


def test_adaptive_uses_fewer_passes_for_a_looser_tolerance(rows):
    model = make_mlp()
    fx = torch.as_tensor(rows)
    loose = integrated_gradients(model, fx, torch.zeros_like(fx), torch.tensor([2] * 4),
                                 n_steps="auto", tolerance=0.05)
    tight = integrated_gradients(model, fx, torch.zeros_like(fx), torch.tensor([2] * 4),
                                 n_steps="auto", tolerance=1e-4, max_steps=512)
    assert (loose.passes <= tight.passes).all()
    gap = (tight.f_input - tight.f_baseline).abs()
    assert bool((tight.delta.abs() <= 1e-4 * gap + 1e-9).all())


@pytest.mark.parametrize("steps", [0, -3, "many", 2.5])
def test_bad_step_counts_are_typed_errors(rows, steps):
    from xai_sandbox.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="n_steps: must be a positive integer or 'auto'"):
        explain(make_mlp(), rows, method="integrated_gradients", n_steps=steps)


def test_token_model_through_its_embedding_layer():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(12, 5), torch.nn.Flatten(),
                                torch.nn.Linear(15, 2)).eval()
    from xai_sandbox.models import TorchAdapter

    adapter = TorchAdapter(model, input_kind="tokens", embedding_layer="0", sample_shape=(3,))
    ids = np.array([[3, 7, 1], [4, 4, 9]])
    e = explain(adapter, ids, method="integrated_gradients", target=1)
    assert e.values.shape == (2, 3)
    # The model is linear in the embedding: IG is exact per token.
    assert e.completeness_error < 1e-4
    g = explain(adapter, ids, method="gradient_x_input", target=1)
    assert g.values.shape == (2, 3)
