import json

import numpy as np
import pytest

from xai_sandbox.datasets import load_german_credit
from xai_sandbox.errors import SchemaError
from xai_sandbox.models.schema import FeatureSchema

RAW = {
    "version": "t/1",
    "features": [
        {"name": "income", "kind": "numeric", "unit": "EUR", "bounds": [0, 1e6],
         "display": {"en": "Income", "zh": "收入"}, "mutable": True, "monotone": "decreasing",
         "reason_code": "C1-08"},
        {"name": "housing", "kind": "categorical", "display": {"en": "Housing", "zh": "住房"},
         "categories": [{"code": "rent", "display": {"en": "rent", "zh": "租房"}}, "own"]},
        {"name": "age", "kind": "numeric", "protected": True, "bounds": [18, 120]},
    ],
}


def test_schema_from_yaml_and_json_agree(tmp_path):
    import yaml

    (tmp_path / "s.yaml").write_text(yaml.safe_dump(RAW, allow_unicode=True), encoding="utf-8")
    (tmp_path / "s.json").write_text(json.dumps(RAW), encoding="utf-8")
    a = FeatureSchema.load(tmp_path / "s.yaml")
    b = FeatureSchema.load(tmp_path / "s.json")
    assert a == b
    assert a.columns == ("income", "housing=rent", "housing=own", "age")
    assert a.groups == ((0,), (1, 2), (3,))
    assert a.display_name("income", "zh") == "收入"
    assert a.feature("age").protected and not a.feature("age").mutable
    assert FeatureSchema.from_dict(a.to_dict()) == a


def test_encode_decode_round_trip():
    schema = FeatureSchema.from_dict(RAW)
    rows = [{"income": 1200.0, "housing": "own", "age": 30}]
    X = schema.encode(rows)
    np.testing.assert_array_equal(X, [[1200.0, 0.0, 1.0, 30.0]])
    assert schema.decode(X) == [{"income": 1200.0, "housing": "own", "age": 30.0}]


@pytest.mark.parametrize(("row", "message"), [
    ({"income": 1.0, "housing": "own"}, r"rows\[0\].age: is required"),
    ({"income": 1.0, "housing": "own", "age": 30, "zip": 1}, r"unknown features"),
    ({"income": 1.0, "housing": "castle", "age": 30}, r"rows\[0\].housing: must be one of"),
    ({"income": float("nan"), "housing": "own", "age": 30}, r"income: must be finite"),
    ({"income": "rich", "housing": "own", "age": 30}, r"income: must be a number"),
    ({"income": 1.0, "housing": "own", "age": 12}, r"age: must lie within the bounds"),
])
def test_encode_names_the_row_feature_rule_and_value(row, message):
    with pytest.raises(SchemaError, match=message):
        FeatureSchema.from_dict(RAW).encode([row])


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda r: r["features"][0].update(kind="text"), r"features\[0\].kind: must be"),
    (lambda r: r["features"][1].update(categories=[]), r"features\[1\].categories"),
    (lambda r: r["features"][0].update(bounds=[5, 1]), r"features\[0\].bounds"),
    (lambda r: r["features"][0].update(monotone="up"), r"features\[0\].monotone"),
    (lambda r: r["features"][0].update(display={"en": "Income"}), r"features\[0\].display"),
    (lambda r: r["features"][2].update(name="income"), r"feature names must be unique"),
    (lambda r: r["features"][0].update(colour="red"), r"unknown keys"),
    (lambda r: r.pop("version"), r"schema.version"),
])
def test_invalid_schemas_are_refused_with_the_path(mutate, message):
    raw = json.loads(json.dumps(RAW))
    mutate(raw)
    with pytest.raises(SchemaError, match=message):
        FeatureSchema.from_dict(raw)


def test_load_reports_bad_files(tmp_path):
    with pytest.raises(SchemaError, match="must end in"):
        FeatureSchema.load(tmp_path / "schema.txt")
    with pytest.raises(SchemaError, match="readable file"):
        FeatureSchema.load(tmp_path / "missing.yaml")
    (tmp_path / "bad.json").write_text("{", encoding="utf-8")
    with pytest.raises(SchemaError, match="valid JSON"):
        FeatureSchema.load(tmp_path / "bad.json")


def test_german_credit_schema_covers_the_data():
    data = load_german_credit()
    schema = data.schema
    assert data.X.shape == (1000, 63) and len(schema.features) == 20
    assert data.y.sum() == 300
    assert {f.name for f in schema.features if f.protected} == {
        "personal_status_sex", "age", "foreign_worker"}
    # Protected features never carry a reason code.
    assert all(f.reason_code is None for f in schema.features if f.protected)
    # Each row has exactly one category per categorical feature.
    for spec, cols in zip(schema.features, schema.groups, strict=True):
        if spec.kind == "categorical":
            assert (data.X[:, list(cols)].sum(axis=1) == 1).all()
    ref = schema.reference_row(data.X)
    assert schema.decode(ref[None])[0]["checking_status"] == "A14"  # the most common code


def test_a_display_with_a_key_that_is_no_locale_is_refused() -> None:
    # What YAML makes of an unquoted comma: {en: 200 DM or more, or salary assigned, zh: x}
    import yaml

    from xai_sandbox.errors import SchemaError
    from xai_sandbox.models.schema import FeatureSchema

    raw = yaml.safe_load("version: t/1\nfeatures:\n  - {name: a, kind: categorical, "
                         "categories: [{code: A, display: {en: 200 or more, or salary, "
                         "zh: x}}]}\n")
    with pytest.raises(SchemaError, match=r"categories\[0\]\.display.*quote"):
        FeatureSchema.from_dict(raw)


def test_the_german_credit_texts_are_whole() -> None:
    from xai_sandbox.datasets.german_credit import load_german_credit

    schema = load_german_credit().schema
    assert schema.display_value("checking_status", "A13") == \
        "200 DM or more, or salary assigned"
    assert schema.display_value("job", "A174") == \
        "management, self-employed or highly qualified"
