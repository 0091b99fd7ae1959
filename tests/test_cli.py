"""The command line, run as a real subprocess the way a user runs it."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xai_sandbox.datasets import load_german_credit
from xai_sandbox.explainers import Explanation

CLI = [sys.executable, "-m", "xai_sandbox.cli"]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd,
                          env={**__import__("os").environ, "COLUMNS": "160"}, timeout=600)


@pytest.fixture(scope="module")
def credit_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = load_german_credit()
    path = tmp_path_factory.mktemp("csv") / "applicants.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(data.schema.names))
        writer.writeheader()
        for row in data.rows[:3]:
            writer.writerow(row)
    return path


def test_methods_lists_every_explainer(tmp_path):
    out = run("methods", cwd=tmp_path)
    assert out.returncode == 0
    for name in ("integrated_gradients", "grad_cam_pp", "exact_shapley", "tree_shap", "lrp"):
        assert name in out.stdout


def test_explain_a_csv_row(tmp_path, credit_csv):
    out = run("explain", "--model", "german-credit-lightgbm", "--method", "tree_shap",
              "--csv", str(credit_csv), "--row", "1", "--target", "bad", "--out",
              str(tmp_path), cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "credit_amount" in out.stdout or "duration" in out.stdout
    e = Explanation.from_json((tmp_path / "german-credit-lightgbm-tree_shap.json").read_bytes())
    assert e.values.shape == (1, 20) and e.completeness_error < 1e-6


def test_explain_with_method_parameters_and_seed(tmp_path, credit_csv):
    out = run("explain", "--model", "german-credit-mlp", "--method", "kernel_shap", "--csv",
              str(credit_csv), "--param", "n_samples=200", "--seed", "3", "--out",
              str(tmp_path), cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    e = Explanation.from_json((tmp_path / "german-credit-mlp-kernel_shap.json").read_bytes())
    assert e.seed == 3 and e.parameters["n_samples"] == 200


def test_explain_an_image(tmp_path, cat):
    path = tmp_path / "cat.png"
    Image.fromarray(cat[0]).save(path)
    out = run("explain", "--model", "efficientnet-lite0", "--method", "grad_cam", "--image",
              str(path), "--out", str(tmp_path), cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    png = tmp_path / "efficientnet-lite0-grad_cam.png"
    with Image.open(png) as image:
        assert image.size[0] > 200


@pytest.mark.parametrize(("args", "message"), [
    (["--method", "nope"], "method: must be one of"),
    (["--method", "tree_shap", "--row", "99"], "--row: must be in [0, 3)"),
    (["--method", "tree_shap", "--target", "maybe"], "target: must be a class of"),
    (["--method", "tree_shap", "--param", "oops"], "--param: must look like NAME=VALUE"),
])
def test_bad_input_is_a_clear_error_not_a_traceback(tmp_path, credit_csv, args, message):
    out = run("explain", "--model", "german-credit-lightgbm", "--csv", str(credit_csv), *args,
              "--out", str(tmp_path), cwd=tmp_path)
    assert out.returncode == 2
    assert message in out.stdout
    assert "Traceback" not in out.stdout + out.stderr


def test_a_csv_row_outside_the_schema_is_named(tmp_path, credit_csv):
    bad = tmp_path / "bad.csv"
    text = credit_csv.read_text(encoding="utf-8").replace("A11", "A99", 1)
    bad.write_text(text, encoding="utf-8")
    out = run("explain", "--model", "german-credit-mlp", "--method", "occlusion", "--csv",
              str(bad), cwd=tmp_path)
    assert out.returncode == 2
    assert "rows[0].checking_status: must be one of the categories" in out.stdout


def test_demo_writes_its_outputs(tmp_path):
    out = run("demo", "--out", str(tmp_path / "demo"), cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Output written" in out.stdout
    doc = json.loads((tmp_path / "demo" / "german_credit_rejected.json").read_text("utf-8"))
    assert doc["decision"]["outcome"] == "rejected" and doc["decision"]["p_bad"] > 0.5
    assert "CC BY 4.0" in doc["data"]["attribution"]
    factors = doc["factors"]
    assert len(factors) == 20 and factors[0]["rank"] == 1
    shap_abs = [abs(f["attributions"]["Shapley (MLP)"]) for f in factors]
    assert shap_abs == sorted(shap_abs, reverse=True)
    for label in ("IG (MLP)", "Shapley (MLP)", "TreeSHAP (LightGBM)"):
        e = Explanation.from_dict(doc["explanations"][label])
        assert e.completeness_error <= 0.01
    for name in ("grad_cam", "grad_cam_pp", "integrated_gradients", "bias"):
        with Image.open(tmp_path / "demo" / f"chelsea_{name}.png") as image:
            img = np.asarray(image)
        assert img.shape[0] > 300 and img.std() > 10  # a real picture, not a blank
