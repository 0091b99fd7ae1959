"""Every model file format behind the one adapter contract: the loaded model scores and is
explained exactly as the same model in memory, its fingerprint is the file's SHA-256, a
tampered file is caught, and nothing from a stranger is unpickled."""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings

import numpy as np
import pytest

from formatkit import credit, save_all
from xai_sandbox.errors import ConflictError, InvalidInputError, UnsupportedModelError
from xai_sandbox.explainers import explain
from xai_sandbox.models import register
from xai_sandbox.models.formats import FORMATS, detect_format, load_model_file

FILE_FORMATS = ("xgboost_json", "xgboost_ubj", "lightgbm_text", "skops", "torch_export",
                "torchscript", "onnx")
TREES = {"xgboost_json", "xgboost_ubj", "lightgbm_text"}
TORCH = {"torch_export", "torchscript", "onnx"}
# The methods each kind runs, with small settings; exact ones must agree to 1e-6.
EXTRA = {"kernel_shap": {"n_samples": 60}, "lime": {"n_samples": 80}}


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    c = credit()
    folder = tmp_path_factory.mktemp("formats")
    return c, save_all(c, folder), folder


def _pair(kit, fmt):
    c, saved, _ = kit
    path, original, options = saved[fmt]
    loaded = load_model_file(path, **options)
    common = {"version": "1", "class_names": ["good", "bad"], "schema": c.schema}
    a = register(loaded.adapter, model_id=f"file-{fmt.replace('_', '-')}", **common)
    b = register(original, model_id=f"memory-{fmt.replace('_', '-')}", **common)
    return c, loaded, a, b, path


def _methods(fmt):
    if fmt in TREES:
        return ["tree_shap", "exact_shapley", "occlusion"]
    if fmt in TORCH:
        return ["integrated_gradients", "saliency", "exact_shapley", "kernel_shap"]
    return ["exact_shapley", "kernel_shap", "lime"]


def test_every_format_is_listed_and_detected(kit):
    _, saved, folder = kit
    assert set(FILE_FORMATS) | {"mlflow"} == set(FORMATS)
    for fmt in FILE_FORMATS:
        expected = "torchscript" if fmt == "torchscript" else fmt
        assert detect_format(saved[fmt][0]) == expected
    stray = folder / "notes.txt"
    stray.write_text("these are not trees\n", encoding="utf-8")
    with pytest.raises(UnsupportedModelError, match="LightGBM"):
        detect_format(stray)


@pytest.mark.parametrize("fmt", FILE_FORMATS)
def test_the_fingerprint_is_the_sha256_of_the_files_bytes(kit, fmt):
    _c, loaded, a, _, path = _pair(kit, fmt)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if fmt == "torchscript":  # a module and its weights: the digest of both digests
        weights = kit[1][fmt][2]["weights"]
        digest = hashlib.sha256(
            f"{digest}  module\n{hashlib.sha256(weights.read_bytes()).hexdigest()}  "
            "weights\n".encode()).hexdigest()
    assert loaded.sha256 == digest == a.fingerprint == loaded.adapter.fingerprint()
    assert loaded.format == fmt


@pytest.mark.parametrize("fmt", FILE_FORMATS)
def test_the_loaded_model_scores_as_the_one_in_memory(kit, fmt):
    c, loaded, a, b, _ = _pair(kit, fmt)
    X = c.X[:200]
    tol = 1e-5 if fmt in TORCH else 1e-9
    np.testing.assert_allclose(a.probabilities(X), b.probabilities(X), atol=tol)
    assert loaded.gradients == (fmt in TORCH)
    if fmt in TORCH:
        assert not loaded.notes or "converts to PyTorch" in loaded.notes[0]
    else:
        assert "gradient methods are unavailable" in loaded.notes[0]


@pytest.mark.parametrize("fmt", FILE_FORMATS)
def test_attributions_equal_those_of_the_model_in_memory(kit, fmt):
    c, _, a, b, _ = _pair(kit, fmt)
    x = c.X[[1, 7]]
    for method in _methods(fmt):
        got = explain(a, x, method=method, target=1, random_state=3, **EXTRA.get(method, {}))
        want = explain(b, x, method=method, target=1, random_state=3, **EXTRA.get(method, {}))
        tol = 2e-5 if fmt in TORCH else 1e-6
        np.testing.assert_allclose(got.values, want.values, atol=tol, err_msg=method)
        assert got.model["fingerprint"] == a.fingerprint != want.model["fingerprint"]


@pytest.mark.parametrize("fmt", FILE_FORMATS)
def test_the_contract_holds_on_every_format(kit, fmt):
    """Shapes, finiteness, determinism, completeness and an exact JSON round trip."""
    from xai_sandbox.explainers import Explanation

    c, _, a, _, _ = _pair(kit, fmt)
    x = c.X[[3, 4, 5]]
    for method in _methods(fmt):
        e = explain(a, x, method=method, target=1, random_state=0, **EXTRA.get(method, {}))
        again = explain(a, x, method=method, target=1, random_state=0,
                        **EXTRA.get(method, {}))
        # Per column, or per feature where the method plays the schema's features.
        assert e.values.shape in (x.shape, (3, len(c.schema.names))), method
        assert np.isfinite(e.values).all()
        np.testing.assert_array_equal(e.values, again.values)
        back = Explanation.from_json(e.to_json())
        np.testing.assert_array_equal(back.values, e.values)
        if method in ("exact_shapley", "tree_shap"):
            assert np.abs(e.delta).max() < 1e-6, method
        if method == "integrated_gradients":  # a Riemann sum: within 2% of the change
            total = np.abs(e.values.reshape(3, -1).sum(axis=1))
            assert (np.abs(e.delta) <= 0.02 * np.maximum(total, 1.0)).all()


@pytest.mark.parametrize("fmt", ["xgboost_json", "lightgbm_text", "skops", "onnx",
                                 "torch_export"])
def test_a_tampered_file_changes_the_fingerprint_and_a_pin_refuses_it(kit, fmt, tmp_path):
    _, saved, _ = kit
    path = saved[fmt][0]
    original = load_model_file(path)
    copy = tmp_path / path.name
    data = bytearray(path.read_bytes())
    if fmt in ("xgboost_json", "lightgbm_text"):
        # A change a DBA or an attacker might make: one leaf value, still a valid model.
        text = data.decode()
        i = next(j for j in range(len(text) // 2, len(text)) if text[j] in "12345678")
        data = bytearray((text[:i] + "9" + text[i + 1:]).encode())
    else:
        data[len(data) // 2] ^= 0x01
    copy.write_bytes(bytes(data))
    with pytest.raises(ConflictError, match="expected_sha256"):
        load_model_file(copy, expected_sha256=original.sha256)
    try:
        tampered = load_model_file(copy)
    except (UnsupportedModelError, InvalidInputError):
        return  # the change broke the file: refused, with a typed error
    assert tampered.sha256 != original.sha256


def shift(X):
    return X + 1.0


def test_a_skops_file_with_an_untrusted_type_is_refused_with_the_types(kit, tmp_path):
    import skops.io
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    c, _, _ = kit
    # A function of the author's inside a pipeline is code: skops does not trust it.
    model = make_pipeline(FunctionTransformer(shift), StandardScaler(),
                          LogisticRegression(max_iter=2000))
    model.fit(c.X[c.train], c.y[c.train])
    skops.io.dump(model, tmp_path / "f.skops")
    with pytest.raises(UnsupportedModelError) as err:
        load_model_file(tmp_path / "f.skops")
    name = f"{__name__}.shift"
    assert name in str(err.value)
    # Reviewed and trusted by name, it loads.
    loaded = load_model_file(tmp_path / "f.skops", trusted=[name])
    assert loaded.trusted_types == (name,)
    np.testing.assert_allclose(loaded.adapter.predict(c.X[:20]), model.predict_proba(c.X[:20]))


def test_a_pickled_mlflow_model_is_refused_unless_trusted(kit, tmp_path):
    import mlflow.sklearn

    c, saved, _ = kit
    lr = saved["skops"][1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mlflow's notes on environments and signatures
        mlflow.sklearn.save_model(lr, tmp_path / "pickled")
    with pytest.raises(UnsupportedModelError, match="pickle"):
        load_model_file(tmp_path / "pickled")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = load_model_file(tmp_path / "pickled", trust_pickle=True)
    assert loaded.trust_pickle and loaded.format == "mlflow"
    np.testing.assert_allclose(loaded.adapter.predict(c.X[:50]), lr.predict_proba(c.X[:50]))


def test_an_mlflow_registry_uri_loads_the_flavours_own_file(kit, tmp_path, monkeypatch):
    import mlflow
    import mlflow.xgboost

    c, saved, _ = kit
    xgb = saved["xgboost_json"][1]
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)  # the run's artefacts go below here
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlflow.set_tracking_uri(tracking)
        with mlflow.start_run():
            mlflow.xgboost.log_model(xgb, name="model", registered_model_name="credit",
                                     model_format="json")
        loaded = load_model_file("models:/credit/1", tracking_uri=tracking)
    assert loaded.format == "mlflow" and "xgboost flavour" in loaded.notes[0]
    np.testing.assert_allclose(loaded.adapter.predict(c.X[:50]), xgb.predict_proba(c.X[:50]),
                               atol=1e-7)
    with pytest.raises(InvalidInputError, match="tracking"):
        load_model_file("models:/credit/1", tracking_uri="https://mlflow.example")


def test_garbage_is_a_typed_error_without_paths(tmp_path):
    for name, data in (("m.json", b"{not json"), ("m.ubj", b"\x00\x01garbage"),
                       ("m.txt", b"tree\nnonsense"), ("m.onnx", b"garbage"),
                       ("m.skops", b"PK\x03\x04garbage"), ("m.pt2", b"garbage"),
                       ("m.bin", b"garbage")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises((UnsupportedModelError, InvalidInputError)) as err:
            load_model_file(tmp_path / name)
        assert str(tmp_path) not in str(err.value), name
    with pytest.raises(InvalidInputError, match="format"):
        load_model_file(tmp_path / "m.json", format="pickle")
    shutil.rmtree(tmp_path)
    with pytest.raises(InvalidInputError, match="existing"):
        load_model_file(tmp_path / "m.json")


def test_onnx_methods_output_says_why_gradients_are_unavailable(kit, tmp_path):
    from skl2onnx import to_onnx
    from sklearn.tree import DecisionTreeClassifier

    c, _, _ = kit
    tree = DecisionTreeClassifier(max_depth=3, random_state=0).fit(c.X[c.train],
                                                                   c.y[c.train])
    onx = to_onnx(tree, c.X[:1].astype(np.float32), options={id(tree): {"zipmap": False}})
    (tmp_path / "tree.onnx").write_bytes(onx.SerializeToString())
    loaded = load_model_file(tmp_path / "tree.onnx")
    assert not loaded.gradients
    assert "TreeEnsembleClassifier" in loaded.notes[0]
    np.testing.assert_allclose(loaded.adapter.predict(c.X[:100]),
                               tree.predict_proba(c.X[:100]), atol=1e-6)
    model = register(loaded.adapter, model_id="tree-onnx", version="1",
                     class_names=["good", "bad"], schema=c.schema)
    e = explain(model, c.X[[2]], method="exact_shapley", target=1)
    assert abs(float(e.delta[0])) < 1e-6
    assert json.loads(e.to_json())["method"] == "exact_shapley"
