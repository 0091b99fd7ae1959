"""The README as a newcomer follows it: its commands run as written, its example request
bodies register models on a real service, and its tables name exactly the keys the code
reads."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from liveserver import LiveServer, make_settings, prepared
from xai_sandbox.datasets import load_german_credit
from xai_sandbox.models.schema import _CATEGORY_KEYS, _FEATURE_KEYS
from xai_sandbox.quality.assess import QualityThresholds
from xai_sandbox.reports.policy import ExplanationPolicy, ModelCard
from xai_sandbox.service.schemas import ModelRequest, Source

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
CLI = Path(sys.executable).parent / "xai-sandbox"   # the console script a user runs
CSV_COMMAND = ("xai-sandbox explain --model german-credit-mlp --method exact_shapley "
               "--csv examples/applicants.csv --row 0 --target bad")


def section(heading: str) -> str:
    """The README's text under ``heading`` (a ``## `` or ``### `` line), up to the next
    heading of the same level or above."""
    level = heading.split(" ", 1)[0]
    start = README.index(f"\n{heading}\n") + len(heading) + 2
    ends = [m.start() for m in re.finditer(rf"\n#{{2,{len(level)}}} ", README[start:])]
    return README[start:start + ends[0]] if ends else README[start:]


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def commands(text: str) -> list[str]:
    """Every ``xai-sandbox ...`` command of a section: lines of its shell blocks (without
    their comments) and inline code in its prose."""
    found = []
    for block in blocks(text, "sh"):
        for line in block.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith("xai-sandbox "):
                found.append(line)
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    found += [c for c in re.findall(r"`(xai-sandbox [^`]+)`", prose.replace("\n", " "))]
    return list(dict.fromkeys(found))


def table_keys(first_header: str) -> set[str]:
    """The names in the first column of the table whose header starts with
    ``| first_header |``."""
    lines = README.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    keys = set()
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        keys.add(line.split("|")[1].strip().strip("`"))
    return keys


# ---------------------------------------------------------------------- the CLI
EXPLAIN = section("## Use it from Python")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder laid out like the repository for the commands: its examples, and a photo
    of the newcomer's own as ``photo.jpg``."""
    from xai_sandbox.demos.images import load_photo

    work = tmp_path_factory.mktemp("readme")
    shutil.copytree(ROOT / "examples", work / "examples")
    Image.fromarray(load_photo("chelsea")).save(work / "photo.jpg")
    return work


def run_cli(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    import shlex

    argv = shlex.split(command)
    assert argv[0] == "xai-sandbox"
    return subprocess.run([str(CLI), *argv[1:]], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "COLUMNS": "160"}, timeout=600)


def test_the_explain_section_gives_the_csv_command_as_written() -> None:
    assert CSV_COMMAND in commands(EXPLAIN)
    assert "applicants.csv" not in EXPLAIN.replace("examples/applicants.csv", "")


@pytest.mark.parametrize("command", commands(EXPLAIN),
                         ids=lambda c: c.removeprefix("xai-sandbox ").split(" --row")[0])
def test_every_command_of_the_explain_section_runs(command: str, workdir: Path) -> None:
    out = run_cli(command, workdir)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip()
    if "--csv" in command:
        for name in load_german_credit().schema.names:
            assert name in out.stdout, name
        assert "why 'bad'" in out.stdout
        assert (workdir / "xai-output" / "german-credit-mlp-exact_shapley.json").is_file()
    if "--image" in command:
        assert "heatmap:" in out.stdout
    if command == "xai-sandbox methods":
        assert "exact_shapley" in out.stdout and "grad_cam_pp" in out.stdout
    if command == "xai-sandbox models":
        assert "german-credit-mlp" in out.stdout


def test_the_sample_csv_holds_real_rows_of_the_german_credit_data() -> None:
    data = load_german_credit()
    with (ROOT / "examples/applicants.csv").open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == data.schema.names
        rows = list(reader)
    assert len(rows) == 5
    for row, real in zip(rows, data.rows, strict=False):
        assert {k: (v if isinstance(real[k], str) else float(v)) for k, v in row.items()} \
            == real
    data.schema.encode([{k: real[k] for k in row} for row, real in zip(rows, data.rows,
                                                                       strict=False)])


# ---------------------------------------------------------------------- the tables
def test_the_feature_schema_table_names_every_key() -> None:
    assert table_keys("key") == _FEATURE_KEYS | {"version", "features", "groups"}
    category = "{" + ", ".join(sorted(_CATEGORY_KEYS)) + "}"
    assert f"`{category}`" in section("## Feature schemas")


def test_the_model_upload_tables_name_every_field() -> None:
    assert table_keys("field of the body") == set(ModelRequest.model_fields)
    source = {f.alias or name for name, f in Source.model_fields.items()}
    assert table_keys("field of `source`") == source
    assert table_keys("key of `policy`") == set(ExplanationPolicy.__dataclass_fields__)
    assert table_keys("key of `policy.quality`") == set(QualityThresholds.__dataclass_fields__)
    # ModelCard's from_dict reads neither of these two fields (they are derived or unused).
    card = set(ModelCard.__dataclass_fields__) - {"data_source_texts", "extra"}
    assert table_keys("key of `card`") == card


def test_the_table_defaults_are_the_code_defaults() -> None:
    policy = ExplanationPolicy.from_dict(
        {"methods": ["tree_shap"], "adverse_class": "bad",
         "outcome_labels": {c: {"en": c, "zh": c} for c in ("good", "bad")}}, ("good", "bad"))
    text = section("### Registering a model")
    for name in ("confidence_threshold", "share", "threshold", "counterfactuals"):
        assert f"| `{name}` |" in text
        row = next(line for line in text.splitlines() if line.startswith(f"| `{name}` |"))
        assert f"`{getattr(policy, name)}`" in row, (name, row)
    assert f"| `{policy.automation}` |" in text
    quality = QualityThresholds()
    for name in ("min_gap", "max_completeness_error", "min_seed_spearman", "agreement_k"):
        row = next(line for line in text.splitlines() if line.startswith(f"| `{name}` |"))
        assert f"`{getattr(quality, name)}`" in row, (name, row)
    card = ModelCard()
    for name in ("purpose", "training_data", "validation_status"):
        row = next(line for line in text.splitlines() if line.startswith(f"| `{name}` |"))
        assert f"`{getattr(card, name)}`" in row, (name, row)


# ---------------------------------------------------------------------- the service
REGISTER = section("### Registering a model")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """What ``xai-sandbox serve --demo`` serves: the demo models and principals."""
    server = prepared(make_settings(tmp_path_factory.mktemp("readme-service"))).start()
    try:
        yield server
    finally:
        server.stop()


def run_shell(block: str, server: LiveServer, cwd: Path) -> dict[str, object]:
    """A shell block of the README as written, against ``server`` in place of
    localhost:8000, with ``$OLIVIA`` set as the demo prints it."""
    assert shutil.which("curl"), "the README's examples use curl"
    port = server.url.rsplit(":", 1)[1]
    script = block.replace("localhost:8000", f"127.0.0.1:{port}")
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True,
                         text=True, cwd=cwd, timeout=300,
                         env={**os.environ, "OLIVIA": server.keys["olivia-operator"]})
    assert out.returncode == 0, out.stderr
    body: dict[str, object] = json.loads(out.stdout)
    return body


def test_the_builtin_registration_example_works(demo: LiveServer, tmp_path: Path) -> None:
    shells = blocks(REGISTER, "sh")
    assert len(shells) == 2
    body = run_shell(shells[0], demo, tmp_path)
    assert body["key"] == "my-credit@1", body
    sent = json.loads(shells[0].split("<<'EOF'\n", 1)[1].split("\nEOF", 1)[0])
    # the example is complete: every key of the policy, its quality block and the card
    assert set(sent["policy"]) == table_keys("key of `policy`")
    assert set(sent["policy"]["quality"]) == table_keys("key of `policy.quality`")
    assert set(sent["card"]) == table_keys("key of `card`")
    assert set(sent) == table_keys("field of the body")
    policy = body["policy"]
    assert isinstance(policy, dict)
    assert policy["mode"] == "sampled" and policy["share"] == 0.25
    assert policy["counterfactual_max_change"] == {"credit_amount": 0.5, "duration": 0.5}
    with demo.client("olivia-operator") as c:
        assert "my-credit@1" in [m["key"] for m in c.get("/v1/models").json()]


def test_the_xgboost_registration_example_works(demo: LiveServer, tmp_path: Path) -> None:
    (script,) = blocks(REGISTER, "python")
    made = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert made.returncode == 0, made.stderr
    request = tmp_path / "xgb-request.json"
    assert request.stat().st_size < demo.settings.max_body_bytes
    body = run_shell(blocks(REGISTER, "sh")[1], demo, tmp_path)
    assert body["key"] == "credit-xgb@1", body
    assert body["source"] == "xgboost_json"
    assert body["features"] == list(load_german_credit().schema.names)


# ---------------------------------------------------------------------- batches on Ray
BATCH = section("## Batch explanations on Ray")


def test_the_batch_commands_run_as_written(workdir: Path, tmp_path: Path) -> None:
    import shlex

    found = commands(BATCH)
    assert [c.split()[1:3] for c in found[:2]] == [["batch", "explain"], ["batch", "report"]]
    env_dir = tmp_path / "data"
    for command in found[:2]:
        argv = shlex.split(command)
        out = subprocess.run([str(CLI), *argv[1:]], capture_output=True, text=True,
                             cwd=workdir, timeout=600,
                             env={**os.environ, "COLUMNS": "160",
                                  "XAI_SANDBOX_DATA_DIR": str(env_dir)})
        assert out.returncode == 0, out.stdout + out.stderr
    folder = workdir / "batch-out"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["rows"] == 5 and manifest["method"] == "tree_shap"
    assert (folder / "global-report.pdf").read_bytes().startswith(b"%PDF")
    for flag in ("--address", "--key", "--previous", "--record", "--cpus-per-task"):
        assert flag in BATCH, flag
