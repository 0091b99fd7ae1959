"""`xai-sandbox schema infer` and `schema check` as a user runs them (real subprocesses):
the draft written, each problem printed naming its feature, and the exit codes (0 fits,
1 problems, 2 an input that cannot be read)."""

from __future__ import annotations

import json

import pytest
import yaml

from clikit import german_frame, run_cli


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    import xgboost

    from xai_sandbox.datasets import read_table, schema_rows
    from xai_sandbox.models.schema import FeatureSchema

    here = tmp_path_factory.mktemp("cli-schema")
    frame = german_frame()
    frame.to_csv(here / "train.csv", index=False)
    done = run_cli("schema", "infer", "train.csv", "--target", "class", "--output", "schema.yaml",
               cwd=here)
    assert done.returncode == 0, done.stdout + done.stderr
    schema = FeatureSchema.load(here / "schema.yaml")
    X = schema.encode(schema_rows(schema, read_table(here / "train.csv")))
    y = (frame["class"] == "bad").astype(int)
    xgboost.XGBClassifier(n_estimators=5, max_depth=2).fit(X, y).get_booster().save_model(
        str(here / "model.ubj"))
    xgboost.XGBClassifier(n_estimators=5, max_depth=2).fit(X[:, :12], y).get_booster(
    ).save_model(str(here / "narrow.ubj"))
    bad = frame.astype(object)
    bad.loc[3, "duration"] = 100
    bad.loc[5, "purpose"] = "A499"
    bad.loc[8, "credit_amount"] = "lots"
    bad.drop(columns=["telephone"]).to_csv(here / "bad.csv", index=False)
    return here


def test_infer_prints_the_draft_without_output(folder):
    done = run_cli("schema", "infer", "train.csv", "--target", "class", "--max-rows", "200",
               cwd=folder)
    assert done.returncode == 0, done.stderr
    draft = yaml.safe_load(done.stdout)
    assert "class" not in [f["name"] for f in draft["features"]]
    assert done.stdout.startswith("# DRAFT feature schema, inferred from 200 rows")


def test_a_fitting_schema_exits_0(folder):
    done = run_cli("schema", "check", "schema.yaml", "--data", "train.csv", "--model", "model.ubj",
               cwd=folder)
    assert done.returncode == 0, done.stdout
    assert done.stdout.startswith("ok: schema.yaml fits the data and the model (1000 rows)")


def test_each_problem_names_its_feature_and_exits_1(folder):
    done = run_cli("schema", "check", "schema.yaml", "--data", "bad.csv", "--model", "narrow.ubj",
               cwd=folder)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "5 problems with schema.yaml against the data and the model:"
    named = [line.strip().split(":", 1)[0] for line in lines[1:6]]
    # missing columns first, then each feature's values in schema order, then the model
    assert named == ["telephone", "duration", "purpose", "credit_amount", "model"]
    assert "row 3: 100" in lines[2] and "[4, 72]" in lines[2]
    assert "'A499'" in lines[3] and "row 8: 'lots'" in lines[4]
    assert "the model takes 12" in lines[5]
    as_json = run_cli("schema", "check", "schema.yaml", "--data", "bad.csv", "--json", cwd=folder)
    assert as_json.returncode == 1
    result = json.loads(as_json.stdout)
    assert result["ok"] is False and result["rows"] == 1000
    assert [p["feature"] for p in result["problems"]] == [
        "telephone", "duration", "purpose", "credit_amount"]


@pytest.mark.parametrize(("args", "message"), [
    (["schema", "check", "schema.yaml"], "--data: give --data, --model or both"),
    (["schema", "check", "schema.yaml", "--data", "nothere.csv"], "must be an existing file"),
    (["schema", "check", "train.csv", "--data", "train.csv"], "must end in .yaml, .yml or .json"),
    (["schema", "infer", "latin1.csv"], "UTF-8"),
    (["schema", "infer", "train.csv", "--target", "Class"], "target"),
    (["schema", "infer", "train.csv", "--max-rows", "0"], "--max-rows"),
])
def test_an_input_that_cannot_be_read_exits_2_in_one_line(folder, args, message):
    (folder / "latin1.csv").write_bytes("name,city\nx,K\xf6ln\n".encode("latin-1"))
    done = run_cli(*args, cwd=folder)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    (line,) = done.stdout.strip().splitlines()
    assert line.startswith("error: ") and message in line, line
