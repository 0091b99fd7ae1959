"""The README's "Bring your own model" walk-through, followed as written: from a CSV of
German credit applicants with a `class` column to a decision report, every command of the
section run as a real subprocess in a fresh folder, and what it prints and writes read
against the model and the data."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from clikit import german_frame, run_cli

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
CLI = Path(sys.executable).parent / "xai-sandbox"


def section() -> str:
    start = README.index("\n## Bring your own model\n")
    end = README.index("\n## ", start + 5)
    return README[start:end]


def shell_lines(text: str) -> list[str]:
    out = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        out += [line.strip() for line in block.splitlines()
                if line.strip().startswith("xai-sandbox ")]
    return out


def run(line: str, folder: Path) -> subprocess.CompletedProcess[str]:
    return run_cli(*shlex.split(line)[1:], cwd=folder, program=[str(CLI)])


@pytest.fixture(scope="module")
def walked(tmp_path_factory):
    """The folder after every step of the section, and what each command printed."""
    folder = tmp_path_factory.mktemp("byom")
    frame = german_frame()
    frame.iloc[:400].to_csv(folder / "train.csv", index=False)
    text = section()
    lines = shell_lines(text)
    assert [line.split()[1:3] for line in lines] == [
        ["schema", "infer"], ["schema", "check"], ["models", "register"],
        ["models", "decide"]]
    (python,) = re.findall(r"```python\n(.*?)```", text, flags=re.S)[:1]
    printed = {}
    printed["infer"] = run(lines[0], folder)
    trained = subprocess.run([sys.executable, "-c", _dedent(python)], capture_output=True,
                             text=True, cwd=folder, timeout=300)
    assert trained.returncode == 0, trained.stderr
    for key, line in zip(("check", "register", "decide"), lines[1:], strict=True):
        printed[key] = run(line, folder)
    return folder, printed, frame.iloc[:400]


def _dedent(block: str) -> str:
    import textwrap

    return textwrap.dedent(block)


def test_every_command_succeeds(walked):
    _, printed, _ = walked
    for step, done in printed.items():
        assert done.returncode == 0, (step, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, step


def test_the_draft_is_the_data_and_suggests_the_protected_features(walked):
    folder, printed, frame = walked
    schema = yaml.safe_load((folder / "schema.yaml").read_text(encoding="utf-8"))
    names = [f["name"] for f in schema["features"]]
    assert names == [c for c in frame.columns if c != "class"]
    assert {f["name"] for f in schema["features"] if f["protected"]} == {
        "personal_status_sex", "age", "foreign_worker"}
    assert all(f["mutable"] is False for f in schema["features"])
    age = next(f for f in schema["features"] if f["name"] == "age")
    assert age["bounds"] == [frame["age"].min(), frame["age"].max()]
    assert "suggested protected: personal_status_sex, age, foreign_worker" in \
        printed["infer"].stdout


def test_the_check_and_the_registration_name_the_model_file(walked):
    import hashlib

    folder, printed, _ = walked
    assert printed["check"].stdout.startswith("ok: schema.yaml fits the data and the model")
    digest = hashlib.sha256((folder / "model.ubj").read_bytes()).hexdigest()
    assert f"registered my-credit@1 (xgboost_ubj), fingerprint sha256:{digest}" in \
        printed["register"].stdout
    assert 'policy methods: ["tree_shap"]' in printed["register"].stdout


def test_the_report_is_the_models_decision_in_raw_feature_terms(walked):
    import xgboost

    from xai_sandbox.datasets import schema_rows
    from xai_sandbox.models.schema import FeatureSchema

    folder, printed, frame = walked
    report = json.loads((folder / "my-report" / "report.json").read_text(encoding="utf-8"))
    assert (folder / "my-report" / "report.pdf").read_bytes().startswith(b"%PDF")
    schema = FeatureSchema.load(folder / "schema.yaml")
    booster = xgboost.Booster()
    booster.load_model(str(folder / "model.ubj"))
    x = schema.encode(schema_rows(schema, frame.iloc[:1]))
    p_bad = float(booster.predict(xgboost.DMatrix(x))[0])
    output = report["output"]
    assert output["score"] == pytest.approx(p_bad, abs=1e-6)
    assert output["label"]["en"] == ("bad" if p_bad >= 0.5 else "good")
    assert f"(score {p_bad:.3f} for" in printed["decide"].stdout
    encoded = [c for c in schema.columns if "=" in c]
    text = json.dumps(report.get("reasons", {}))
    assert not any(c in text for c in encoded)
    for reason in report.get("reasons", {}).get("reasons", []):
        assert reason["feature"] in schema.names
        assert reason["feature"] not in {"personal_status_sex", "age", "foreign_worker"}
