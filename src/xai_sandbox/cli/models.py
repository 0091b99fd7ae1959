"""``xai-sandbox models``: list the built-in models, the formats a model file may be in,
and register a model file (or MLflow model) with its schema and training sample."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from xai_sandbox.cli.common import app, console, fail, open_store
from xai_sandbox.errors import InvalidInputError, XaiSandboxError

__all__ = ["models"]

models = typer.Typer(no_args_is_help=False, invoke_without_command=True,
                     help="Built-in models, model file formats, and registering your own.")
app.add_typer(models, name="models")


@models.callback()
def _models(ctx: typer.Context) -> None:
    """Without a command: list the built-in models."""
    if ctx.invoked_subcommand is None:
        builtin()


@models.command("list")
def builtin() -> None:
    """List the built-in models."""
    from xai_sandbox.demos.catalog import BUILTIN_MODELS

    for name in sorted(BUILTIN_MODELS):
        console.print(name)


@models.command("formats")
def formats() -> None:
    """List the model file formats `models register` reads."""
    from xai_sandbox.models.formats import FORMATS

    for name, what in FORMATS.items():
        console.print(f"{name:14} {what}", soft_wrap=True, markup=False)


def _mapping_file(path: Path | None, option: str) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InvalidInputError(option, "must be a readable YAML or JSON file",
                                str(path)) from exc
    if not isinstance(raw, dict):
        raise InvalidInputError(option, "must hold a mapping", str(path))
    return raw


@models.command("register")
def register(
    model: Annotated[str, typer.Argument(
        help="model file, MLflow folder, or models:/NAME/VERSION")],
    schema: Annotated[Path, typer.Option(help="feature schema (YAML or JSON)")],
    model_id: Annotated[str, typer.Option("--id", help="model id")],
    version: Annotated[str, typer.Option(help="model version")] = "1",
    data: Annotated[Path | None, typer.Option(
        help="training sample (CSV or Parquet) with the schema's raw features")] = None,
    policy: Annotated[Path | None, typer.Option(help="explanation policy (YAML or JSON)")
                      ] = None,
    adverse_class: Annotated[str | None, typer.Option(
        help="the class that is adverse to the person (without --policy)")] = None,
    class_names: Annotated[str | None, typer.Option(
        help="the classes in the model's output order, comma-separated")] = None,
    card: Annotated[Path | None, typer.Option(help="model card (YAML or JSON)")] = None,
    format: Annotated[str | None, typer.Option(help="the file's format (default: detected)")
                      ] = None,
    weights: Annotated[Path | None, typer.Option(help="TorchScript: safetensors weights")
                       ] = None,
    trust: Annotated[list[str] | None, typer.Option(
        help="skops: a type to trust after reviewing it (repeatable)")] = None,
    trust_pickle: Annotated[bool, typer.Option(
        "--trust-pickle", help="MLflow: load a pickled flavour (recorded in the audit log)")
                            ] = False,
    sha256: Annotated[str | None, typer.Option(help="refuse the file unless its SHA-256 is "
                                                    "this")] = None,
    output_space: Annotated[str | None, typer.Option(
        help="ONNX/torch: what the model outputs (probability, logit, output)")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking store (local)")
                            ] = None,
) -> None:
    """Register a model file with its schema (and training sample) in the local store."""
    from xai_sandbox.models.schema import FeatureSchema
    from xai_sandbox.workflows import Decider
    from xai_sandbox.workflows.upload import register_file

    try:
        feature_schema = FeatureSchema.load(schema)
        names = [c.strip() for c in class_names.split(",")] if class_names else None
        chosen = _mapping_file(policy, "--policy")
        store = open_store()
        try:
            decider = Decider(store)
            decider.load_registered()
            served = register_file(
                decider, model, schema=feature_schema, model_id=model_id, version=version,
                policy=chosen, adverse_class=adverse_class, card=_mapping_file(card, "--card"),
                data=data, class_names=names, format=format, weights=weights,
                trusted=tuple(trust or ()), trust_pickle=trust_pickle,
                expected_sha256=sha256, output_space=output_space, tracking_uri=tracking_uri)
        finally:
            store.close()
    except XaiSandboxError as exc:
        raise fail(exc) from None
    summary = served.summary()
    console.print(f"registered {summary['key']} ({summary['format']}), fingerprint "
                  f"sha256:{summary['fingerprint']}", soft_wrap=True, markup=False)
    for note in summary["notes"]:
        console.print(f"  note: {note}", soft_wrap=True, markup=False)
    runs = [m for m, why in summary["methods"].items() if why == "available"]
    console.print(f"  methods: {', '.join(runs)}", soft_wrap=True, markup=False)
    console.print(f"  policy methods: {json.dumps(summary['policy']['methods'])}", markup=False)


@models.command("decide")
def decide(
    model_id: Annotated[str, typer.Argument(help="a registered model's id")],
    data: Annotated[Path, typer.Option(help="CSV or Parquet rows with the raw features")],
    row: Annotated[int, typer.Option(help="which row (from 0)")] = 0,
    subject: Annotated[str, typer.Option(help="the person's id at the deployer")] = "subject-1",
    out: Annotated[Path, typer.Option(help="folder for report.json and report.pdf")
                   ] = Path("xai-report"),
) -> None:
    """Decide one row with a registered model and write its full report (JSON and PDF)."""
    from xai_sandbox.datasets.rows import schema_rows
    from xai_sandbox.datasets.tables import read_table
    from xai_sandbox.reports.render import render_json, render_pdf
    from xai_sandbox.workflows import Decider

    try:
        if row < 0:
            raise InvalidInputError("--row", "must be 0 or more", row)
        frame = read_table(data, max_rows=row + 1)
        if row >= len(frame):
            raise InvalidInputError("--row", f"must be below the file's {len(frame)} rows", row)
        store = open_store()
        try:
            decider = Decider(store)
            decider.load_registered()
            schema = decider.model(model_id).schema
            (features,) = schema_rows(schema, frame.iloc[[row]])
            outcome = decider.decide(model_id=model_id, subject_id=subject, features=features)
            if outcome.job_id is not None:  # an expensive method: run its job here
                job = decider.jobs.claim(outcome.job_id)
                if job is not None:
                    decider.run_job(job)
            report = decider.full_report(outcome.decision_id)
        finally:
            store.close()
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_bytes(render_json(report))
        (out / "report.pdf").write_bytes(render_pdf(report))
    except XaiSandboxError as exc:
        raise fail(exc) from None
    output = report["output"]
    console.print(f"decision {outcome.decision_id}: {output['label']['en']} "
                  f"(score {output['score']:.3f} for {output['score_meaning']})", markup=False,
                  soft_wrap=True)
    for reason in report.get("reasons", {}).get("reasons", [])[:4]:
        console.print(f"  {reason.get('rank', '-')}. {reason['text']['en']}", markup=False,
                      soft_wrap=True)
    console.print(f"report: {out / 'report.json'} and {out / 'report.pdf'}", markup=False)
