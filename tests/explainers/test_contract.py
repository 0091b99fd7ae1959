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
from xai_sandbox.explainers import EXPLAINERS, Explanation, explain, get_explainer
from xai_sandbox.explainers.base import OUTPUT_SPACES
from xai_sandbox.models import register

IMAGE_ONLY = {"grad_cam", "grad_cam_pp"}
# Parameters that keep the runs small; each one is used on the case's inputs (window and
# patch would not be: the cases are tabular, and an unused parameter is refused).
EXTRA = {"contrastive": {"foil": 0}, "smoothgrad": {"n_samples": 4},
         "lime": {"n_samples": 60}, "kernel_shap": {"n_samples": 40},
         "permutation_shap": {"n_permutations": 8}}


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
    with pytest.raises(InvalidInputError, match=r"n_step: integrated_gradients does not take "
                                                r"this parameter \(its parameters: \['n_steps'"):
        explain(model, X, method="integrated_gradients", n_step=3)


@pytest.mark.parametrize("method", sorted(m for m, c in EXPLAINERS.items()
                                          if c.requires == "gradients"))
def test_gradient_methods_refuse_models_without_gradients(method):
    model, X, _ = _case("tree_shap")
    with pytest.raises(NotDifferentiableError, match="needs gradients"):
        explain(model, X, method=method, target=1)


# ------------------------------------------------------------------ nothing silently ignored
def _explainer(method):
    return get_explainer(method, **EXTRA.get(method, {}))


@pytest.mark.parametrize("method", METHODS)
def test_an_unknown_parameter_is_refused_by_name(method):
    model, X, target = _case(method)
    with pytest.raises(InvalidInputError, match=f"no_such_option: {method} does not take "
                                                "this parameter") as info:
        explain(model, X, method=method, target=target, no_such_option=1,
                **EXTRA.get(method, {}))
    assert info.value.parameter == "no_such_option" and info.value.value == 1


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("argument", ["baselines", "background"])
def test_an_argument_is_either_used_or_refused(method, argument):
    """Every method either reads baselines (background) -- and then a different one
    changes its answer -- or refuses it with an error that names it."""
    model, X, target = _case(method)
    params = EXTRA.get(method, {})
    rows = np.random.default_rng(9).normal(size=(8, *X.shape[1:])).astype(X.dtype)
    one = {"baselines": rows[:1] + 0.5, "background": rows}[argument]
    other = {"baselines": rows[1:2] - 0.5, "background": rows[4:] * 2.0}[argument]
    if argument not in _explainer(method).uses():
        with pytest.raises(InvalidInputError, match=f"{argument}: {method} does not use "
                                                    f"{argument}") as info:
            explain(model, X, method=method, target=target, random_state=0,
                    **{argument: one}, **params)
        assert info.value.parameter == argument
        return
    a = explain(model, X, method=method, target=target, random_state=0, **{argument: one},
                **params)
    b = explain(model, X, method=method, target=target, random_state=0, **{argument: other},
                **params)
    assert not np.allclose(a.values, b.values)


def test_which_methods_read_baselines_and_background():
    reads = {m: sorted(_explainer(m).uses()) for m in METHODS}
    assert reads == {
        "contrastive": ["baselines"],  # as its base, integrated_gradients, does
        "deeplift": ["baselines"], "exact_shapley": ["background", "baselines"],
        "grad_cam": [], "grad_cam_pp": [], "gradient_x_input": ["baselines"],
        "integrated_gradients": ["baselines"], "kernel_shap": ["background", "baselines"],
        "lime": ["baselines"], "lrp": [], "occlusion": ["baselines"],
        "owen_shapley": ["background", "baselines"],
        "permutation_shap": ["background", "baselines"], "saliency": [],
        "smoothgrad": [],  # as its base, saliency, does
        "tree_shap": ["background"]}


@pytest.mark.parametrize(("method", "params", "named"), [
    ("integrated_gradients", {"n_steps": 8, "tolerance": 0.1}, "tolerance"),
    ("integrated_gradients", {"n_steps": 8, "max_steps": 64}, "max_steps"),
    ("occlusion", {"window": 4}, "window"),
    ("occlusion", {"stride": 2}, "stride"),
    ("lime", {"patch": 4, "n_samples": 60}, "patch"),
    ("smoothgrad", {"base_method": "integrated_gradients",
                    "base_params": {"n_steps": 8, "tolerance": 0.1}}, "base_params.tolerance"),
    ("smoothgrad", {"base_params": {"n_step": 8}}, "base_params.n_step"),
    ("contrastive", {"foil": 0, "base_method": "saliency", "baselines": 0.5}, "baselines"),
    ("smoothgrad", {"baselines": 0.5}, "baselines"),
    ("saliency", {"background": np.zeros((2, 6), dtype=np.float32)}, "background"),
])
def test_a_parameter_this_run_would_not_use_is_refused(method, params, named):
    model, X, target = _case(method)
    with pytest.raises(InvalidInputError, match=f"^{named}: ") as info:
        explain(model, X, method=method, target=target, **params)
    assert info.value.parameter == named


def test_shapley_baselines_next_to_a_background_are_refused():
    model, X, _ = _case("exact_shapley")
    bg = np.zeros((4, 6), dtype=np.float32)
    with pytest.raises(InvalidInputError, match="baselines: exact_shapley averages over the "
                                                "background"):
        explain(model, X, method="exact_shapley", background=bg, baselines=bg[:1] + 1)
    with_bg = register(make_mlp(), model_id="mlp", version="1", class_names=list("abc"),
                       sample_shape=(6,), background=bg)
    with pytest.raises(InvalidInputError, match=r"background \(the registered model's\)"):
        explain(with_bg, X, method="kernel_shap", baselines=bg[:1] + 1, n_samples=40)
    # Without a background the baselines are the rows averaged over.
    e = explain(model, X, method="exact_shapley", target=1, baselines=bg[:1] + 1)
    np.testing.assert_array_equal(e.baseline, bg[:1] + 1)


def test_a_wrapper_names_an_unknown_base_method():
    model, X, _ = _case("smoothgrad")
    with pytest.raises(UnknownMethodError, match="base_method: must be one of"):
        explain(model, X, method="smoothgrad", base_method="salency")


def test_a_missing_required_parameter_is_named():
    model, X, _ = _case("contrastive")
    with pytest.raises(InvalidInputError, match="foil: is required by contrastive"):
        explain(model, X, method="contrastive")


def test_token_ig_refuses_the_adaptive_rule_parameters():
    import torch

    from xai_sandbox.models import TorchAdapter

    model = torch.nn.Sequential(torch.nn.Embedding(12, 5), torch.nn.Flatten(),
                                torch.nn.Linear(15, 2)).eval()
    adapter = TorchAdapter(model, input_kind="tokens", embedding_layer="0", sample_shape=(3,))
    with pytest.raises(InvalidInputError, match=r"tolerance: only the adaptive rule.*token"):
        explain(adapter, np.array([[3, 7, 1]]), method="integrated_gradients", tolerance=0.1)


@pytest.mark.parametrize("method", METHODS)
def test_a_method_that_does_not_sample_ignores_no_seed(method):
    """random_state is accepted everywhere and recorded as the seed; where the method
    does not sample, the seed cannot change the answer, and where it does, it does."""
    model, X, target = _case(method)
    params = EXTRA.get(method, {})
    a = explain(model, X, method=method, target=target, random_state=1, **params)
    b = explain(model, X, method=method, target=target, random_state=2, **params)
    assert (a.seed, b.seed) == (1, 2)
    if _explainer(method).stochastic():
        assert not np.allclose(a.values, b.values)
    else:
        np.testing.assert_array_equal(a.values, b.values)


def test_which_methods_sample():
    assert sorted(m for m in METHODS if _explainer(m).stochastic()) == [
        "kernel_shap", "lime", "permutation_shap", "smoothgrad"]
    assert get_explainer("contrastive", foil=0, base_method="lime").stochastic()


# ------------------------------------------------------------------ output spaces
SPACES = {"tree_shap": "margin", "contrastive": "contrast"}  # the rest: the model's, logit


@pytest.mark.parametrize("method", METHODS)
def test_every_method_names_its_output_space(method, monkeypatch):
    cls = EXPLAINERS[method]
    results = []
    original = cls.run

    def spy(self, problem):
        result = original(self, problem)
        results.append(result)
        return result

    monkeypatch.setattr(cls, "run", spy)
    model, X, target = _case(method)
    e = explain(model, X, method=method, target=target, random_state=0, **EXTRA.get(method, {}))
    assert results and results[0].output_space is not None  # explicit, not a fallback
    assert e.output_space == SPACES.get(method, "logit") == results[0].output_space
    assert e.output_space in OUTPUT_SPACES
    assert Explanation.from_json(e.to_json()).output_space == e.output_space


def test_the_documented_output_spaces():
    assert set(OUTPUT_SPACES) == {"logit", "probability", "log_probability", "log_odds",
                                  "margin", "output", "contrast"}
    assert all(isinstance(v, str) and v for v in OUTPUT_SPACES.values())


def test_a_model_in_an_undocumented_output_space_is_refused():
    from xai_sandbox.errors import UnsupportedModelError
    from xai_sandbox.models import TorchAdapter

    X = np.zeros((2, 6), dtype=np.float32)
    odd = TorchAdapter(make_mlp(), output_space="scores")
    with pytest.raises(UnsupportedModelError, match=r"model\.output_space: must be one of"):
        explain(odd, X, method="saliency")
    log_odds = TorchAdapter(make_mlp(), output_space="log_odds")
    assert explain(log_odds, X, method="saliency").output_space == "log_odds"
