"""Commands for the ML engineer: methods, explain, models, demo, validate, llm-audit."""

from __future__ import annotations

import json
import struct
import warnings
import zlib
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from xai_sandbox.cli.common import app, console, csv_row, csv_rows, fail, open_store, parse_params
from xai_sandbox.errors import InvalidInputError, XaiSandboxError


@app.command()
def methods() -> None:
    """List the registered explanation methods."""
    import xai_sandbox.text  # noqa: F401  (importing registers the text methods)
    from xai_sandbox.explainers import available_methods

    for family, title in (("array", "explanation methods"), ("text", "text and LLM methods")):
        table = Table(title=title)
        table.add_column("method")
        table.add_column("needs")
        table.add_column("what it does")
        for name, needs, summary in available_methods(family):  # type: ignore[arg-type]
            table.add_row(name, needs, summary)
        console.print(table)




@app.command("explain")
def explain_command(
    model: Annotated[str, typer.Option(help="built-in model id (see `xai-sandbox models`)")],
    method: Annotated[str, typer.Option(help="method name (see `xai-sandbox methods`)")],
    csv_path: Annotated[Path | None, typer.Option("--csv", help="CSV file with a header of "
                                                  "feature names")] = None,
    row: Annotated[int, typer.Option(help="row of the CSV file, from 0")] = 0,
    image: Annotated[Path | None, typer.Option(help="image file (PNG, JPEG)")] = None,
    target: Annotated[str | None, typer.Option(help="class name or index; default: the "
                                               "predicted class")] = None,
    param: Annotated[list[str] | None, typer.Option(help="method parameter NAME=VALUE "
                                                    "(repeatable)")] = None,
    seed: Annotated[int | None, typer.Option(help="random_state for sampling methods")] = None,
    out: Annotated[Path, typer.Option(help="folder for the JSON (and PNG) output")] = Path(
        "xai-output"),
) -> None:
    """Explain one row of a CSV file or one image with the chosen method and target."""
    try:
        if (csv_path is None) == (image is None):
            raise InvalidInputError("--csv/--image", "give exactly one of them",
                                    {"csv": str(csv_path), "image": str(image)})
        # The input is read first: a file that cannot be used fails before the model and
        # the libraries load.
        record = csv_row(csv_path, row) if csv_path is not None else None
        x: Any = None
        pixels: Any = None
        if image is not None:
            x, pixels = _image_input(image)
        from xai_sandbox.demos.catalog import builtin_model
        from xai_sandbox.explainers import explain

        registered = builtin_model(model)
        params = parse_params(param or [])
        tgt: Any = int(target) if target is not None and target.isdigit() else target
        out.mkdir(parents=True, exist_ok=True)
        with console.status(f"{method} on {model} ..."):
            if record is not None:
                if registered.schema is None:
                    raise InvalidInputError("--csv", "needs a tabular model", model)
                x = registered.schema.encode(record)
            e = explain(registered, x, method=method, target=tgt, random_state=seed,
                        **params)
        target_name = registered.class_names[int(e.target[0])] if registered.class_names \
            else str(int(e.target[0]))
        result = out / f"{model}-{method}.json"
        result.write_bytes(e.to_json())
        if csv_path is not None:
            table = Table(title=f"{method} on {model}: why '{target_name}'")
            table.add_column("#", justify="right")
            table.add_column("feature")
            table.add_column("attribution", justify="right")
            for i, (name, value) in enumerate(e.ranked(0), start=1):
                table.add_row(str(i), name, f"{value:+.4f}")
            console.print(table)
        else:
            from xai_sandbox.reports.heatmap import save_overlay

            png = save_overlay(pixels, e, out / f"{model}-{method}.png",
                               title=f"{method}: '{target_name}'")
            console.print(f"heatmap: {png}")
        if e.completeness_error is not None:
            console.print(f"completeness error: {e.completeness_error:.3e}")
        console.print(f"explanation JSON: {result}")
    except XaiSandboxError as exc:
        raise fail(exc) from exc


def _image_input(path: Path) -> tuple[Any, Any]:
    from PIL import Image, UnidentifiedImageError

    limit = Image.MAX_IMAGE_PIXELS
    try:
        # PIL warns at MAX_IMAGE_PIXELS and refuses at twice that; refuse at the warning.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                rgb = img.convert("RGB")  # decoded here, so a broken file fails here
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidInputError("--image", f"must have at most {limit} pixels (a larger "
                                           "one may be a decompression bomb)", str(path)
                                ) from None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, EOFError,
            struct.error, zlib.error) as exc:  # what PIL raises on a broken file
        raise InvalidInputError("--image", f"must be a readable image file "
                                           f"({type(exc).__name__})", str(path)) from exc
    from xai_sandbox.demos.images import fit_image, preprocess

    pixels = fit_image(rgb)
    return preprocess(pixels), pixels


@app.command()
def demo(out: Annotated[Path, typer.Option(help="output folder")] = Path("xai-output")) -> None:
    """Explain a rejected German credit applicant and a cat photo; write JSON and PNGs."""
    from xai_sandbox.demos.run import run_demo

    try:
        result = run_demo(out, console)
    except XaiSandboxError as exc:
        raise fail(exc) from exc
    console.print("\n[bold]Output written:[/bold]")
    console.print(f"  factors and explanations (JSON): {result.credit_json.resolve()}")
    for png in result.overlays:
        console.print(f"  heatmap overlay (PNG):           {png.resolve()}")


def _gate_subject(model: str, rows: int, data: Path | None) -> Any:
    """A built-in model by name, or a served model by key (``model@version``), with its
    held-out sample: the built-in split, or the rows of ``--data``."""
    import dataclasses

    from xai_sandbox.demos.catalog import BUILTIN_MODELS, held_out

    if "@" not in model:
        subject = held_out(model, rows) if model in BUILTIN_MODELS else None
        if subject is None:
            raise InvalidInputError("--model", f"must be a built-in model "
                                    f"{sorted(BUILTIN_MODELS)} or a served key model@version",
                                    model)
        if data is not None:
            raise InvalidInputError("--data", "is for served models; a built-in model brings "
                                    "its own held-out split", str(data))
        return subject
    from xai_sandbox.workflows import Decider

    decider = Decider(open_store())
    decider.load_registered()
    served = decider.model_by_key(model)
    source = served.spec["source"]
    if data is None:
        if source.get("kind", "builtin") != "builtin":
            raise InvalidInputError("--data", "is needed for an uploaded model: a CSV of "
                                    "held-out rows with the schema's features", None)
        subject = held_out(str(source["name"]), rows)
        return dataclasses.replace(subject, model=served.model,
                                   methods=tuple(served.policy.methods))
    X = served.schema.encode(csv_rows(data)[:rows])
    from xai_sandbox.demos.catalog import HeldOut

    return HeldOut(served.model, X, None, tuple(served.policy.methods))


@app.command()
def validate(
    model: Annotated[str, typer.Option(help="built-in model name, or a served model's key "
                                            "(model@version)")],
    method: Annotated[list[str] | None, typer.Option(
        help="method to validate (repeat; default: the baseline's, else the model's "
             "own)")] = None,
    rows: Annotated[int | None, typer.Option(
        help="held-out rows to use (default: as many as the baseline's sample, 30 with "
             "--record)")] = None,
    data: Annotated[Path | None, typer.Option(help="CSV of held-out rows (served models)")
                    ] = None,
    baseline: Annotated[Path | None, typer.Option(
        help="the recorded baseline (default: quality-baselines/<model>.json)")] = None,
    record: Annotated[bool, typer.Option(help="record this run as the baseline")] = False,
    rebaseline: Annotated[bool, typer.Option(
        help="accept another model fingerprint, sample or settings than the baseline's: "
             "compare anyway and, with no regression, record this run as the new "
             "baseline")] = False,
    out: Annotated[Path | None, typer.Option(help="also write the full result here")] = None,
    seed: Annotated[int | None, typer.Option(
        help="random_state of every sampled metric (default: the baseline's, else 0)")
                    ] = None,
) -> None:
    """Release gate: run the quality metrics (deletion/insertion, completeness,
    infidelity, max-sensitivity, rank stability, randomisation sanity check, agreement) on
    a held-out sample and compare them with the model's recorded baseline. Rows, methods
    and seed default to the baseline's, so the run is comparable; a run on another model
    fingerprint, sample or settings fails unless --rebaseline. Exit code 0: no regression
    (or --record); 1: a regression or a mismatch; 2: an error (no baseline, say)."""
    from xai_sandbox.quality.gate import compare, load_baseline, save_baseline
    from xai_sandbox.quality.gate import validate as run_validation

    path = baseline or Path("quality-baselines") / f"{model.replace('@', '-')}.json"
    try:
        # An unknown model is named before a missing baseline (read once the model is).
        previous = None if record or not path.is_file() else load_baseline(path)
        recorded = (previous or {}).get("settings") or {}
        count = rows if rows is not None else int(
            (previous or {}).get("sample", {}).get("rows") or 30)
        subject = _gate_subject(model, count, data)
        if not record and previous is None:
            previous = load_baseline(path)
        methods = method or recorded.get("methods") or subject.methods
        random_state = seed if seed is not None else int(recorded.get("random_state", 0))
        result = run_validation(subject.model, subject.rows, methods,
                                training=subject.training, random_state=random_state)
        if out is not None:
            save_baseline(result, out)
        if previous is None:    # --record
            save_baseline(result, path)
            console.print(f"recorded the baseline of {model}: {path}")
            print(json.dumps(result["metrics"], indent=2))
            return
        verdict = compare(result, previous, rebaseline=rebaseline)
    except XaiSandboxError as exc:
        raise fail(exc) from exc
    print(json.dumps({**verdict, "metrics": result["metrics"]}, indent=2))
    if verdict["mismatches"] and not rebaseline:
        fields = ", ".join(m["field"] for m in verdict["mismatches"])
        console.print(f"[red]not comparable[/red] with {path}: {fields} differ from the "
                      "baseline's; --rebaseline compares anyway and, with no regression, "
                      "records this run as the new baseline")
    if verdict["regressions"]:
        console.print(f"[red]quality regression[/red] in {len(verdict['regressions'])} "
                      f"metric(s) against {path}")
    if not verdict["passed"]:
        raise typer.Exit(code=1)
    if rebaseline and verdict["mismatches"]:
        save_baseline(result, path)
        console.print(f"no quality regression; re-baselined {path} on this run")
        return
    console.print(f"no quality regression against {path} ({verdict['checked']} metrics)")


@app.command("llm-audit")
def llm_audit_command(
    out: Annotated[Path, typer.Option(help="output folder")] = Path("xai-output/llm-audit"),
    quick: Annotated[bool, typer.Option(help="small samples: a smoke run")] = False,
) -> None:
    """Audit the text models (MiniLM sentiment classifier, SmolLM2 assistant): token
    heatmaps, attention rollout, probe curves, a universal-trigger red team, an
    activation-patching map and the self-explanation check, as HTML, PDF and JSON."""
    from xai_sandbox.reports.llm_audit import llm_audit

    try:
        result = llm_audit(out, quick=quick, log=lambda m: console.print(f"[dim]{m}[/dim]"))
    except XaiSandboxError as exc:
        raise fail(exc) from exc
    console.print("\n[bold]LLM audit written:[/bold]")
    for path in (result.html, result.pdf, result.json):
        console.print(f"  {path.resolve()}")
