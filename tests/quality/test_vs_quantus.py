"""Our metrics against Quantus (a test-only dependency) where it has the same metric:
pixel flipping is our deletion curve, step for step; max-sensitivity is Captum's and
Quantus's estimate of the same maximum."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import quantus
import torch

from xai_sandbox.explainers import explain
from xai_sandbox.models.registry import register
from xai_sandbox.quality.faithfulness import curves, explained_output_fn, players_of
from xai_sandbox.quality.stability import max_sensitivity


def _quiet(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def test_deletion_curve_equals_quantus_pixel_flipping() -> None:
    gen = torch.Generator().manual_seed(0)
    cnn = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2))
    with torch.no_grad():
        for p in cnn.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    cnn.eval()
    model = register(cnn, model_id="tiny", version="1", class_names=["a", "b"],
                     input_kind="image", sample_shape=(1, 8, 8))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 1, 8, 8)).astype(np.float32)
    e = explain(model, x, method="saliency", target=1)
    values = rng.normal(size=(1, 1, 8, 8))            # distinct values: one order
    e = dataclasses.replace(e, values=values)
    ours = curves(explained_output_fn(model.adapter, e), x[0], np.full_like(x[0], x.min()),
                  players_of(e, (1, 8, 8)))
    raw = ours.baseline_output + ours.deletion * (ours.output - ours.baseline_output)
    metric = quantus.PixelFlipping(features_in_step=1, perturb_baseline="black",
                                   disable_warnings=True, display_progressbar=False)
    theirs = _quiet(metric, model=cnn, x_batch=x, y_batch=np.array([1]), a_batch=values,
                    device="cpu", softmax=False, channel_first=True)
    np.testing.assert_allclose(raw[1:], np.asarray(theirs[0]), rtol=1e-5, atol=1e-5)


def test_max_sensitivity_agrees_with_quantus_on_a_linear_model() -> None:
    lin = torch.nn.Linear(6, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.0] * 6, [2.0, -1.0, 0.5, 3.0, 1.0, -2.0]]))
    lin.eval()
    model = register(lin, model_id="lin", version="1", class_names=["a", "b"])
    x = np.array([[1.0, 2.0, -1.0, 0.5, 1.5, 1.0]], dtype=np.float32)
    ours = max_sensitivity(model, x, "integrated_gradients", radius=0.2, n_perturb=200,
                           target=1, baselines=0.0)["max_sensitivity"]

    def explain_func(model, inputs, targets, **_):  # type: ignore[no-untyped-def]
        return np.asarray(explain(lin, np.asarray(inputs, dtype=np.float32),
                                  method="integrated_gradients", target=np.asarray(targets),
                                  baselines=0.0).values)

    metric = quantus.MaxSensitivity(nr_samples=200, lower_bound=0.2,
                                    disable_warnings=True, display_progressbar=False)
    np.random.seed(0)
    theirs = _quiet(metric, model=lin, x_batch=x, y_batch=np.array([1]),
                    a_batch=explain_func(lin, x, np.array([1])), device="cpu",
                    explain_func=explain_func, softmax=False)[0]
    # The same maximum, estimated from 200 draws each: the analytic supremum bounds both.
    w = lin.weight.detach().numpy()[1]
    bound = 0.2 * np.linalg.norm(w) / np.linalg.norm(w * x[0])
    assert ours <= bound + 1e-6 and theirs <= bound + 1e-6
    assert ours == pytest.approx(theirs, rel=0.15)
