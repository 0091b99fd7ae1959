import subprocess
import sys

import numpy as np
import pytest
import torch
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from helpers import make_mlp
from xai_sandbox.errors import InvalidInputError, NotDifferentiableError, UnsupportedModelError
from xai_sandbox.models import ModelRegistry, SklearnAdapter, TorchAdapter, register, wrap
from xai_sandbox.models.fingerprint import fingerprint_module


def _fit_data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    return X, y


def test_wrap_picks_the_adapter():
    X, y = _fit_data()
    assert isinstance(wrap(make_mlp()), TorchAdapter)
    assert isinstance(wrap(LogisticRegression().fit(X, y)), SklearnAdapter)
    with pytest.raises(UnsupportedModelError, match=r"model: must be a torch\.nn\.Module"):
        wrap("not a model")


def test_torch_adapter_predicts_logits(rows):
    model = make_mlp()
    adapter = wrap(model, sample_shape=(6,))
    out = adapter.predict(rows)
    expected = model(torch.as_tensor(rows)).detach().double().numpy()
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.float64 and out.shape == (4, 3)
    # One sample is promoted to a batch of one.
    assert adapter.predict(rows[0]).shape == (1, 3)


@pytest.mark.parametrize(("bad", "message"), [
    (np.zeros((2, 5), dtype=np.float32), r"inputs: each sample must have shape \(6,\)"),
    (np.array([["a"] * 6]), r"must be a real numeric array; got 'dtype <U1'"),
    (np.array([[1.0, np.nan, 0, 0, 0, 0]]), r"must be finite.*nan at index \(0, 1\)"),
    (np.array([[np.inf, 0, 0, 0, 0, 0]]), r"must be finite"),
    (np.zeros((0, 6)), r"non-empty batch"),
    (np.array([[True] * 6]), r"real numeric array"),
])
def test_bad_inputs_raise_typed_errors(bad, message):
    adapter = TorchAdapter(make_mlp(), sample_shape=(6,))
    with pytest.raises(InvalidInputError, match=message):
        adapter.validate_inputs(bad)


def test_errors_inside_the_model_name_the_input():
    adapter = TorchAdapter(make_mlp())  # no sample_shape: the model itself rejects
    with pytest.raises(InvalidInputError, match=r"inputs: must be accepted by the model.*\(2, 4\)"):
        adapter.predict(np.zeros((2, 4), dtype=np.float32))


def test_training_mode_is_refused_not_changed():
    model = make_mlp().train()
    with pytest.raises(InvalidInputError, match="eval mode"):
        TorchAdapter(model).predict(np.zeros((1, 6)))
    assert model.training


def test_sklearn_adapter_probabilities_and_errors():
    X, y = _fit_data()
    est = LogisticRegression().fit(X, y)
    adapter = SklearnAdapter(est)
    np.testing.assert_allclose(adapter.predict(X[:3]), est.predict_proba(X[:3]))
    assert adapter.output_space == "probability" and not adapter.differentiable
    with pytest.raises(NotDifferentiableError, match="gradient methods need"):
        adapter.torch_module()
    with pytest.raises(InvalidInputError, match=r"each sample must have shape \(5,\)"):
        adapter.predict(X[:, :3])


@pytest.mark.parametrize("library", ["lightgbm", "xgboost"])
def test_boosters_through_their_sklearn_api(library):
    X, y = _fit_data()
    if library == "lightgbm":
        import lightgbm

        est = lightgbm.LGBMClassifier(n_estimators=20, verbose=-1).fit(X, y)
    else:
        import xgboost

        est = xgboost.XGBClassifier(n_estimators=20, max_depth=3).fit(X, y)
    adapter = wrap(est)
    assert adapter.is_tree_ensemble  # type: ignore[attr-defined]
    p = adapter.predict(X[:10])
    margin = adapter.predict_margin(X[:10])  # type: ignore[attr-defined]
    np.testing.assert_allclose(p[:, 1], 1 / (1 + np.exp(-margin[:, 0])), rtol=1e-5)
    assert len(adapter.fingerprint()) == 64


@pytest.mark.parametrize("classes", [2, 3])
def test_lightgbm_probabilities_through_the_booster_equal_predict_proba(classes):
    """The adapter calls a LightGBM classifier's booster directly (its scikit-learn
    wrapper costs more than the trees on one row): the numbers must be predict_proba's."""
    import lightgbm

    rng = np.random.default_rng(classes)
    X = rng.normal(size=(400, 6))
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + (classes == 3) * (X[:, 2] > 0.8)
    est = lightgbm.LGBMClassifier(n_estimators=30, verbose=-1).fit(X, y)
    adapter = wrap(est)
    rows = rng.normal(size=(57, 6)) * 3
    np.testing.assert_array_equal(adapter.predict(rows), est.predict_proba(rows))
    np.testing.assert_array_equal(adapter.predict(rows[:1]), est.predict_proba(rows[:1]))
    margin = np.asarray(est.predict(rows, raw_score=True))
    np.testing.assert_array_equal(adapter.predict_margin(rows),  # type: ignore[attr-defined]
                                  margin[:, None] if margin.ndim == 1 else margin)


def test_fingerprints_are_stable_across_processes_and_track_weights():
    model = make_mlp(seed=3)
    here = fingerprint_module(model)
    code = ("import sys; sys.path.insert(0, 'tests'); from helpers import make_mlp; "
            "from xai_sandbox.models.fingerprint import fingerprint_module; "
            "print(fingerprint_module(make_mlp(seed=3)))")
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout.strip()
    assert here == there
    with torch.no_grad():
        next(model.parameters())[0, 0] += 1e-6
    assert fingerprint_module(model) != here


def test_sklearn_fingerprint_stable_across_processes():
    X, y = _fit_data()
    est = RandomForestClassifier(n_estimators=3, random_state=0).fit(X, y)
    code = ("import numpy as np; from sklearn.ensemble import RandomForestClassifier; "
            "from xai_sandbox.models.fingerprint import fingerprint_estimator; "
            "rng = np.random.default_rng(0); X = rng.normal(size=(200, 5)); "
            "y = (X[:, 0] + X[:, 1] > 0).astype(int); "
            "print(fingerprint_estimator(RandomForestClassifier(n_estimators=3, "
            "random_state=0).fit(X, y)))")
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout.strip()
    assert wrap(est).fingerprint() == there
    other = RandomForestClassifier(n_estimators=3, random_state=1).fit(X, y)
    assert wrap(other).fingerprint() != there


def test_register_and_registry():
    reg = register(make_mlp(), model_id="m", version="1", class_names=["a", "b", "c"],
                   sample_shape=(6,))
    assert reg.identity == {"model_id": "m", "version": "1", "fingerprint": reg.fingerprint}
    assert reg.class_index("c") == 2
    registry = ModelRegistry()
    registry.add(reg)
    assert registry.get("m") is reg and len(registry) == 1
    with pytest.raises(InvalidInputError, match="already registered with other weights"):
        registry.add(register(make_mlp(seed=9), model_id="m", version="1",
                              class_names=["a", "b", "c"]))
    with pytest.raises(InvalidInputError, match="model_id: must be a registered model"):
        registry.get("nope")
    with pytest.raises(InvalidInputError, match="model_id: must be 1-128"):
        register(make_mlp(), model_id="bad id!", version="1", class_names=["a", "b"])
    with pytest.raises(InvalidInputError, match="class_names: a classifier needs"):
        register(make_mlp(), model_id="m", version="1", class_names=["a"])


def test_token_adapter_needs_an_embedding_layer():
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Flatten(),
                                torch.nn.Linear(12, 2)).eval()
    with pytest.raises(InvalidInputError, match="embedding_layer"):
        TorchAdapter(model, input_kind="tokens")
    adapter = TorchAdapter(model, input_kind="tokens", embedding_layer="0", sample_shape=(3,))
    assert adapter.predict(np.array([[1, 2, 3]])).shape == (1, 2)
    with pytest.raises(InvalidInputError, match="integer token ids"):
        adapter.predict(np.array([[1.0, 2.0, 3.0]]))
