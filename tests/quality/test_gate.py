"""The release gate: a baseline recorded on the released model, a worse release stopped,
through the library and through `xai-sandbox validate`'s exit code."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from xai_sandbox.demos.catalog import BUILTIN_MODELS
from xai_sandbox.errors import InvalidInputError
from xai_sandbox.models.registry import register
from xai_sandbox.quality.gate import compare, load_baseline, save_baseline, validate


@pytest.fixture(scope="module")
def released(credit):  # type: ignore[no-untyped-def]
    X = credit.data.X[credit.test[:12]]
    return X, validate(credit.mlp, X, ["integrated_gradients", "gradient_x_input"])


def test_a_run_against_itself_passes_and_names_every_metric(released) -> None:
    _, result = released
    metrics = result["metrics"]
    for method in ("integrated_gradients", "gradient_x_input"):
        for name in ("gap", "deletion_area", "insertion_area", "infidelity",
                     "max_sensitivity", "noise_spearman", "randomisation_final",
                     "randomisation_passed"):
            assert f"{method}.{name}" in metrics, name
    assert metrics["integrated_gradients.completeness_error_max"] < 0.05
    assert metrics["gradient_x_input.completeness_error_max"] is None
    assert "agreement.integrated_gradients & gradient_x_input" in metrics
    verdict = compare(result, result)
    assert verdict["passed"] and verdict["checked"] >= 12 and verdict["same_sample"]


def test_a_release_whose_explanations_got_worse_is_stopped(credit, released) -> None:
    X, baseline = released
    # The "new release": same architecture, last two layers re-trained badly (random).
    worse = copy.deepcopy(credit.mlp.adapter.module)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in (worse[2], worse[4]):
            for p in layer.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * p.std())
    release = register(worse.eval(), model_id="german-credit-mlp", version="2",
                       class_names=credit.mlp.class_names, schema=credit.mlp.schema,
                       reference=credit.mlp.reference)
    current = validate(release, X, ["integrated_gradients", "gradient_x_input"])
    verdict = compare(current, baseline)
    assert not verdict["passed"]
    assert verdict["model"]["current"]["version"] == "2"
    assert [m["field"] for m in verdict["mismatches"]] == ["model.fingerprint"]
    failed = {r["metric"] for r in verdict["regressions"]}
    # Gradient x input of the worse network ranks features far less faithfully.
    assert "gradient_x_input.gap" in failed, failed
    # Re-baselining accepts the new weights, not worse explanations.
    again = compare(current, baseline, rebaseline=True)
    assert not again["passed"] and again["regressions"] == verdict["regressions"]


def test_another_model_or_sample_is_a_mismatch_unless_re_baselined(released) -> None:
    _, result = released
    for field, change in (("model.fingerprint", ("model", "fingerprint", "0" * 64)),
                          ("sample.sha256", ("sample", "sha256", "f" * 64)),
                          ("sample.rows", ("sample", "rows", 30)),
                          ("settings.random_state", ("settings", "random_state", 1))):
        other = copy.deepcopy(result)
        section, key, value = change
        other[section][key] = value
        verdict = compare(other, result)
        assert not verdict["passed"] and verdict["regressions"] == []
        assert [m["field"] for m in verdict["mismatches"]] == [field]
        assert verdict["mismatches"][0]["baseline"] == result[section][key]
        assert compare(other, result, rebaseline=True)["passed"]
    assert compare(result, result)["mismatches"] == []
    with pytest.raises(InvalidInputError, match="rebaseline"):
        compare(result, result, rebaseline="yes")  # type: ignore[arg-type]


def test_compare_rules(released) -> None:
    _, result = released
    broken = copy.deepcopy(result)
    broken["metrics"]["integrated_gradients.randomisation_passed"] = 0.0
    broken["metrics"].pop("gradient_x_input.gap")
    broken["metrics"]["integrated_gradients.infidelity"] *= 1.2     # within 25%
    verdict = compare(broken, result)
    rules = {r["metric"]: r["rule"] for r in verdict["regressions"]}
    assert set(rules) == {"integrated_gradients.randomisation_passed",
                          "gradient_x_input.gap"}
    assert "must pass" in rules["integrated_gradients.randomisation_passed"]
    assert "not measured" in rules["gradient_x_input.gap"]
    better = copy.deepcopy(result)
    better["metrics"]["integrated_gradients.gap"] += 0.3             # improvements pass
    assert compare(better, result)["passed"]
    worse = copy.deepcopy(result)
    worse["metrics"]["integrated_gradients.gap"] -= 0.06
    assert not compare(worse, result)["passed"]
    assert compare(worse, result, tolerances={"gap": 0.1})["passed"]
    with pytest.raises(InvalidInputError, match="tolerances"):
        compare(result, result, tolerances={"speed": 1.0})
    with pytest.raises(InvalidInputError, match="baseline"):
        compare(result, {"schema_version": "other"})


def test_validate_checks_its_arguments(credit) -> None:
    X = credit.data.X[credit.test[:4]]
    with pytest.raises(InvalidInputError, match="methods"):
        validate(credit.mlp, X, [])
    with pytest.raises(InvalidInputError, match="methods"):
        validate(credit.mlp, X, ["magic"])
    with pytest.raises(InvalidInputError, match="at least 2"):
        validate(credit.mlp, X[:1], ["saliency"])


def test_baseline_files_round_trip_and_refuse_garbage(tmp_path, released) -> None:
    _, result = released
    path = save_baseline(result, tmp_path / "b" / "m.json")
    assert load_baseline(path)["metrics"] == result["metrics"]
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(InvalidInputError, match="JSON"):
        load_baseline(tmp_path / "bad.json")
    with pytest.raises(InvalidInputError, match="--record"):
        load_baseline(tmp_path / "missing.json")


def _cli(tmp_path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "xai_sandbox.cli", "validate", *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "XAI_SANDBOX_DATA_DIR": str(tmp_path)})


def _verdict(run: subprocess.CompletedProcess[str]) -> dict[str, object]:
    out: dict[str, object] = json.loads(run.stdout[:run.stdout.rindex("}") + 1])
    return out


def test_cli_gate_exit_codes(tmp_path) -> None:
    model = ["--model", "german-credit-lightgbm"]
    missing = _cli(tmp_path, *model)
    assert missing.returncode == 2 and "no recorded baseline" in missing.stdout
    recorded = _cli(tmp_path, *model, "--rows", "8", "--record")
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    path = tmp_path / "quality-baselines" / "german-credit-lightgbm.json"
    assert path.is_file()
    # Rows, methods and seed default to the baseline's: the same 8 rows again.
    same = _cli(tmp_path, *model)
    assert same.returncode == 0, same.stdout + same.stderr
    assert _verdict(same)["passed"] is True and _verdict(same)["mismatches"] == []
    # Another sample is not comparable: exit 1.
    more = _cli(tmp_path, *model, "--rows", "9")
    assert more.returncode == 1 and "not comparable" in more.stdout
    assert {m["field"] for m in _verdict(more)["mismatches"]} == {  # type: ignore[attr-defined]
        "sample.rows", "sample.sha256"}
    # Nor is another model: exit 1 unless re-baselined, which records the new weights.
    doc = json.loads(path.read_text(encoding="utf-8"))
    fingerprint = doc["model"]["fingerprint"]
    doc["model"]["fingerprint"] = "0" * 64
    path.write_text(json.dumps(doc), encoding="utf-8")
    other = _cli(tmp_path, *model)
    assert other.returncode == 1 and "model.fingerprint" in other.stdout
    assert "quality regression" not in other.stdout
    rebased = _cli(tmp_path, *model, "--rebaseline")
    assert rebased.returncode == 0, rebased.stdout + rebased.stderr
    assert "re-baselined" in rebased.stdout
    assert json.loads(path.read_text(encoding="utf-8"))["model"]["fingerprint"] == fingerprint
    # The recorded release was better than this one: the gate stops it.
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["metrics"]["tree_shap.gap"] += 0.5
    doc["metrics"]["tree_shap.noise_spearman"] = 1.0 + 0.1
    path.write_text(json.dumps(doc), encoding="utf-8")
    stopped = _cli(tmp_path, *model)
    assert stopped.returncode == 1
    assert "quality regression" in stopped.stdout and "tree_shap.gap" in stopped.stdout
    unknown = _cli(tmp_path, "--model", "no-such-model")
    assert unknown.returncode == 2 and "--model" in unknown.stdout
    assert np.isfinite(doc["metrics"]["tree_shap.infidelity"])


@pytest.mark.parametrize("model", sorted(BUILTIN_MODELS))
def test_the_built_in_models_pass_their_committed_baselines(model, tmp_path) -> None:
    """The gate as the README runs it, from the repository root with every default:
    each catalogue model against its committed baseline (quality-baselines/<model>.json),
    the models as this checkout builds them. The image model's run (the suite's one
    EfficientNet gate) also shows the cascade failing Grad-CAM++ at the classifier."""
    root = Path(__file__).resolve().parents[2]
    assert (root / "quality-baselines" / f"{model}.json").is_file()
    out = tmp_path / "run.json"
    run = subprocess.run([sys.executable, "-m", "xai_sandbox.cli", "validate", "--model",
                          model, "--out", str(out)], cwd=root, capture_output=True,
                         text=True, timeout=900,
                         env={**os.environ, "XAI_SANDBOX_DATA_DIR": str(tmp_path)})
    assert run.returncode == 0, run.stdout + run.stderr
    assert "no quality regression" in run.stdout
    assert _verdict(run)["mismatches"] == []
    if model == "efficientnet-lite0":
        check = json.loads(out.read_text(encoding="utf-8"))["methods"]["grad_cam_pp"][
            "randomisation"]
        assert check["rule"] == "classifier" and check["statistic"] == "spearman_abs"
        assert check["stages"][0]["randomised_down_to"] == "_fc"
        assert check["classifier"] > 0.5 and not check["passed"]
        assert [s["randomised_down_to"] for s in check["stages"]][-1] == "_conv_stem"
