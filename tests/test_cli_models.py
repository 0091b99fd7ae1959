"""`xai-sandbox models`: register a model file with its schema and training sample, and
decide with it into a full report, as real subprocesses the way a user runs them."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from clikit import run_cli
from formatkit import credit, save_all, write_csv


def run(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=home)


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    c = credit()
    folder = tmp_path_factory.mktemp("cli-models")
    saved = save_all(c, folder)
    (folder / "schema.yaml").write_text(yaml.safe_dump(c.schema.to_dict(), allow_unicode=True),
                                        encoding="utf-8")
    write_csv(c, folder / "train.csv", c.train[:300])
    return c, saved, folder


@pytest.mark.parametrize("fmt", ["lightgbm_text", "torch_export"])
def test_register_then_decide_writes_a_report_in_raw_features(kit, fmt, tmp_path):
    import pypdf

    c, saved, folder = kit
    path = saved[fmt][0]
    reg = run("models", "register", str(path), "--schema", str(folder / "schema.yaml"),
              "--data", str(folder / "train.csv"), "--id", "mine", "--adverse-class", "bad",
              "--class-names", "good,bad", home=tmp_path)
    assert reg.returncode == 0, reg.stdout + reg.stderr
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert f"registered mine@1 ({fmt}), fingerprint sha256:{digest}" in reg.stdout
    expected = "tree_shap" if fmt == "lightgbm_text" else "integrated_gradients"
    assert f'policy methods: ["{expected}"]' in reg.stdout
    out = run("models", "decide", "mine", "--data", str(folder / "train.csv"), "--row", "5",
              "--out", str(tmp_path / "rep"), home=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads((tmp_path / "rep" / "report.json").read_text(encoding="utf-8"))
    assert report["model"]["fingerprint_sha256"] == digest
    assert report["explanations"][0]["method"] == expected
    reasons = report["reasons"]["reasons"]
    assert reasons and {r["feature"] for r in reasons} <= set(c.schema.names)
    for r in reasons[:4]:  # what was printed is what the report says
        assert r["text"]["en"] in out.stdout
    text = "".join(p.extract_text() for p in pypdf.PdfReader(tmp_path / "rep" /
                                                             "report.pdf").pages)
    assert digest in text.replace("\n", "")
    # The score printed is the model's own on that row.
    row = c.schema.encode({n: c.rows[int(c.train[5])][n] for n in c.schema.names})
    model = saved[fmt][1]
    if hasattr(model, "predict_proba"):
        score = model.predict_proba(row)[0, 1]
    else:
        import torch

        score = torch.softmax(model(torch.as_tensor(row, dtype=torch.float32)), 1)[0, 1].item()
    assert f"score {score:.3f}" in out.stdout


def test_bad_registrations_are_one_line_errors(kit, tmp_path):
    _, saved, folder = kit
    schema = str(folder / "schema.yaml")
    cases = [
        (["models", "register", str(saved["skops"][0]), "--schema", schema, "--id", "x",
          "--adverse-class", "worse", "--class-names", "good,bad"], "adverse_class"),
        (["models", "register", str(folder / "missing.onnx"), "--schema", schema, "--id", "x",
          "--adverse-class", "bad"], "path: must be an existing model file"),
        (["models", "register", str(saved["xgboost_json"][0]), "--schema", schema, "--id",
          "x", "--adverse-class", "bad", "--class-names", "good,bad", "--sha256", "0" * 64],
         "expected_sha256"),
        (["models", "decide", "nobody", "--data", str(folder / "train.csv")], "model_id"),
    ]
    for args, message in cases:
        out = run(*args, home=tmp_path)
        assert out.returncode == 2, out.stdout
        assert message in out.stdout and "Traceback" not in out.stdout + out.stderr


def test_models_lists_builtins_and_formats(tmp_path):
    listed = run("models", home=tmp_path)
    assert listed.returncode == 0 and "german-credit-mlp" in listed.stdout
    formats = run("models", "formats", home=tmp_path)
    from xai_sandbox.models.formats import FORMATS

    assert all(name in formats.stdout for name in FORMATS)
