"""One contract over every registered explainer."""

import pickle

import numpy as np
import pytest

from helpers import make_cnn, make_mlp
from xai_sandbox.errors import (
    InvalidInputError,
    InvalidTargetError,
    NotDifferentiableError,
    UnknownMethodError,
)
from xai_sandbox.explainers import EXPLAINERS, Explanation, explain
from xai_sandbox.models import register

IMAGE_ONLY = {"grad_cam", "grad_cam_pp"}
EXTRA = {"contrastive": {"foil": 0}, "smoothgrad": {"n_samples": 4},
         "lime": {"n_samples": 60, "patch": 4}, "kernel_shap": {"n_samples": 40},
         "occlusion": {"window": 4}}


def _lightgbm():
    import lightgbm

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 6)).astype(np.float32)
    y = (X[:, 0] - X[:, 2] + 0.3 * rng.normal(size=300) > 0).astype(int)
    return lightgbm.LGBMClassifier(n_estimators=30, verbose=-1).fit(X, y)


def _case(method):
    """A model and inputs the method runs on."""
    rng = np.random.default_rng(5)
    if method == "tree_shap":
        model = register(_lightgbm(), model_id="gbm", version="1", class_names=["no", "yes"])
        return model, rng.normal(size=(3, 6)).astype(np.float32), 1
    if method in IMAGE_ONLY:
        model = register(make_cnn(), model_id="cnn", version="1", class_names=list("abc"),
                         input_kind="image", sample_shape=(3, 8, 8))
        return model, rng.normal(size=(2, 3, 8, 8)).astype(np.float32), 2
    if method == "lrp":
        # LRP conserves relevance on a bias-free ReLU network.
        net = make_mlp()
        for layer in (net[0], net[2]):
            layer.bias.data.zero_()
        model = register(net, model_id="mlp0", version="1", class_names=list("abc"),
                         sample_shape=(6,))
        return model, rng.normal(size=(3, 6)).astype(np.float32), 2
    model = register(make_mlp(), model_id="mlp", version="1", class_names=list("abc"),
                     sample_shape=(6,))
    return model, rng.normal(size=(3, 6)).astype(np.float32), 2


METHODS = sorted(EXPLAINERS)


@pytest.mark.parametrize("method", METHODS)
def test_output_shape_and_provenance(method):
    model, X, target = _case(method)
    e = explain(model, X, method=method, target=target, random_state=0, **EXTRA.get(method, {}))
    assert isinstance(e, Explanation) and e.method == method
    assert e.values.shape[0] == X.shape[0]
    if method in IMAGE_ONLY:
        assert e.values.shape == (2, 1, 8, 8)
    else:
        assert e.values.shape == X.shape
    assert np.isfinite(e.values).all()
    assert (e.target == target).all()
    assert e.prediction.shape[0] == X.shape[0]
    assert e.model["fingerprint"] == model.fingerprint
    assert "torch" in e.library_versions and "captum" in e.library_versions
    assert e.wall_time_s >= 0 and e.seed == 0
    assert not e.values.flags.writeable


@pytest.mark.parametrize("method", METHODS)
def test_deterministic_given_random_state(method):
    model, X, target = _case(method)
    params = EXTRA.get(method, {})
    a = explain(model, X, method=method, target=target, random_state=7, **params)
    b = explain(model, X, method=method, target=target, random_state=7, **params)
    np.testing.assert_array_equal(a.values, b.values)


@pytest.mark.parametrize("method", METHODS)
def test_json_round_trip_is_exact(method):
    model, X, target = _case(method)
    e = explain(model, X, method=method, target=target, random_state=0, **EXTRA.get(method, {}))
    back = Explanation.from_json(e.to_json())
    assert back.to_json() == e.to_json()
    np.testing.assert_array_equal(back.values, e.values)
    assert back.values.dtype == e.values.dtype
    with pytest.raises(TypeError, match="never pickled"):
        pickle.dumps(e)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("target", [99, -1, 1.5, [0, 1, 0, 1, 0], "no-such-class"])
def test_bad_target_is_a_typed_error(method, target):
    model, X, _ = _case(method)
    with pytest.raises(InvalidTargetError, match="target: must be"):
        explain(model, X, method=method, target=target, **EXTRA.get(method, {}))


@pytest.mark.parametrize("method", METHODS)
def test_bad_inputs_are_typed_errors(method):
    model, X, target = _case(method)
    params = EXTRA.get(method, {})
    with pytest.raises(InvalidInputError, match="inputs: each sample must have shape"):
        explain(model, X[..., :-1], method=method, target=target, **params)
    with pytest.raises(InvalidInputError, match="inputs: must be a real numeric array"):
        explain(model, X.astype(str), method=method, target=target, **params)
    bad = X.copy()
    bad.flat[3] = np.nan
    with pytest.raises(InvalidInputError, match="inputs: must be finite"):
        explain(model, bad, method=method, target=target, **params)
    bad.flat[3] = np.inf
    with pytest.raises(InvalidInputError, match="inputs: must be finite"):
        explain(model, bad, method=method, target=target, **params)


def test_unknown_method_lists_the_registered_ones():
    model, X, _ = _case("saliency")
    with pytest.raises(UnknownMethodError,
                       match=r"method: must be one of .*'integrated_gradients'"):
        explain(model, X, method="shapely")


def test_unknown_parameter_is_a_typed_error():
    model, X, _ = _case("saliency")
    with pytest.raises(InvalidInputError, match="integrated_gradients does not take"):
        explain(model, X, method="integrated_gradients", n_step=3)


@pytest.mark.parametrize("method", sorted(m for m, c in EXPLAINERS.items()
                                          if c.requires == "gradients"))
def test_gradient_methods_refuse_models_without_gradients(method):
    model, X, _ = _case("tree_shap")
    with pytest.raises(NotDifferentiableError, match="needs gradients"):
        explain(model, X, method=method, target=1)
