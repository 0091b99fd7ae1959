"""``xai-sandbox schema``: draft a feature schema from a table, and check one against the
data and the model it is for."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from xai_sandbox.cli.common import app, console, fail
from xai_sandbox.errors import InvalidInputError, SchemaError, XaiSandboxError

__all__ = ["schema"]

schema = typer.Typer(no_args_is_help=True,
                     help="Draft a feature schema from data; check one against data and model.")
app.add_typer(schema, name="schema")


@schema.command("infer")
def infer(
    data: Annotated[Path, typer.Argument(help="training data (CSV or Parquet)")],
    target: Annotated[str | None, typer.Option(
        help="the column the model predicts (left out of the features)")] = None,
    output: Annotated[Path | None, typer.Option(
        help="write the draft here (default: print it)")] = None,
    version: Annotated[str, typer.Option(help="the schema's version")] = "1",
    max_rows: Annotated[int | None, typer.Option(
        help="read only the first rows of the file")] = None,
    max_categories: Annotated[int, typer.Option(
        help="a text column with more distinct values is left out")] = 50,
) -> None:
    """Draft a commented YAML schema from the data, for a person to review."""
    from xai_sandbox.datasets.tables import read_table
    from xai_sandbox.semantics.drafting import draft_schema

    try:
        if max_rows is not None and max_rows < 1:
            raise InvalidInputError("--max-rows", "must be 1 or more", max_rows)
        frame = read_table(data, max_rows=max_rows)
        draft = draft_schema(frame, target=target, version=version,
                             max_categories=max_categories)
        text = draft.to_yaml()
        if output is not None:
            try:
                output.write_text(text, encoding="utf-8")
            except OSError as exc:
                raise InvalidInputError("--output", f"must be a writable file "
                                        f"({exc.strerror})", str(output)) from None
    except XaiSandboxError as exc:
        raise fail(exc) from None
    if output is None:
        typer.echo(text, nl=False)
        return
    left = [n for n in draft.notes if n.name is None]
    console.print(f"drafted {len(draft.notes) - len(left)} features from {len(frame)} rows: "
                  f"{output}", markup=False, soft_wrap=True)
    for note in left:
        console.print(f"  left out {note.column}: {note.excluded}", markup=False,
                      soft_wrap=True)
    protected = [n.name for n in draft.notes if n.protected_by]
    if protected:
        console.print(f"  suggested protected: {', '.join(map(str, protected))}",
                      markup=False, soft_wrap=True)
    console.print("  review every feature (units, monotone, reason_code, mutable) before "
                  "registering a model with it", markup=False, soft_wrap=True)


@schema.command("check")
def check(
    schema_file: Annotated[Path, typer.Argument(metavar="SCHEMA",
                                                help="feature schema (YAML or JSON)")],
    data: Annotated[Path | None, typer.Option(
        help="rows with the raw features (CSV or Parquet)")] = None,
    model: Annotated[str | None, typer.Option(
        help="model file, MLflow folder, or models:/NAME/VERSION")] = None,
    format: Annotated[str | None, typer.Option(help="the model file's format "
                                                    "(default: detected)")] = None,
    weights: Annotated[Path | None, typer.Option(help="TorchScript: safetensors weights")
                       ] = None,
    trust: Annotated[list[str] | None, typer.Option(
        help="skops: a type to trust after reviewing it (repeatable)")] = None,
    output_space: Annotated[str | None, typer.Option(
        help="ONNX/torch: what the model outputs (probability, logit, output)")] = None,
    class_names: Annotated[str | None, typer.Option(
        help="the classes in the model's output order, comma-separated")] = None,
    max_rows: Annotated[int | None, typer.Option(help="check only the first rows")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")
                       ] = False,
) -> None:
    """Check a schema against data and a model: exit 0 when it fits, 1 with the problems
    (each naming its feature), 2 when an input cannot be read."""
    from xai_sandbox.datasets.tables import read_table
    from xai_sandbox.models.formats import load_model_file
    from xai_sandbox.models.schema import FeatureSchema
    from xai_sandbox.semantics.schema_check import Problem, SchemaCheck, check_schema

    try:
        if data is None and model is None:
            raise InvalidInputError("--data", "give --data, --model or both to check the "
                                    "schema against", None)
        if max_rows is not None and max_rows < 1:
            raise InvalidInputError("--max-rows", "must be 1 or more", max_rows)
        feature_schema = FeatureSchema.load(schema_file)
        frame = read_table(data, max_rows=max_rows) if data is not None else None
        names = tuple(c.strip() for c in class_names.split(",")) if class_names else None
        adapter, load_problem = None, None
        if model is not None:
            try:
                loaded = load_model_file(model, format=format, schema=feature_schema,
                                         weights=weights, trusted=tuple(trust or ()),
                                         output_space=output_space)
                adapter = loaded.adapter
                names = names or (loaded.class_names or None)
            except SchemaError as exc:   # the model's columns are not the schema's
                load_problem = Problem("model", "must be fitted on the schema's features",
                                       " ".join(str(exc).split()))
        result = check_schema(feature_schema, data=frame, model=adapter, class_names=names)
        if load_problem is not None:
            result = SchemaCheck(problems=(load_problem, *result.problems), notes=result.notes,
                                 rows=result.rows, columns=result.columns)
    except XaiSandboxError as exc:
        raise fail(exc) from None
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        what = " and ".join(w for w, given in (("the data", data), ("the model", model))
                            if given is not None)
        if result.ok:
            rows = f" ({result.rows} rows)" if result.rows is not None else ""
            console.print(f"ok: {schema_file} fits {what}{rows}", markup=False, soft_wrap=True)
        else:
            count = len(result.problems)
            console.print(f"{count} problem{'s' if count > 1 else ''} with {schema_file} "
                          f"against {what}:", markup=False, soft_wrap=True)
            for problem in result.problems:
                console.print(f"  {problem}", markup=False, soft_wrap=True)
        for note in result.notes:
            console.print(f"  note: {note}", markup=False, soft_wrap=True)
    if not result.ok:
        raise typer.Exit(code=1)
