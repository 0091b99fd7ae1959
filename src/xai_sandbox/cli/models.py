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
