"""``xai-sandbox batch``: explain a whole table of rows on Ray, resumable, with a progress
bar; Ctrl-C stops and leaves what was written for the same command to resume."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from xai_sandbox.cli.common import app, console, fail, open_store, parse_params
from xai_sandbox.errors import NotFoundError, XaiSandboxError

if TYPE_CHECKING:
    from xai_sandbox.workflows import Decider
    from xai_sandbox.workflows.served import ServedModel

__all__ = ["batch"]

batch = typer.Typer(no_args_is_help=True, help="Explain whole tables of rows on Ray.")
app.add_typer(batch, name="batch")


def served_model(decider: Decider, key: str) -> ServedModel:
    """A registered model by ``id@version`` or id (its latest version); a built-in credit
    model's name registers it first (with the demo's policy) when the store lacks it."""
    from xai_sandbox.service.demo import builtin_spec

    model_id, _, version = key.partition("@")
    try:
        return decider.model(model_id, version or None)
    except NotFoundError:
        spec = builtin_spec(model_id)
        if spec is None or version not in ("", spec["version"]):
            raise NotFoundError("--model", "must be a registered model (id or id@version; "
                                "see `xai-sandbox models register`) or a built-in credit "
                                "model", key) from None
        return decider.register(spec)


@batch.command("explain")
def explain(
    model: Annotated[str, typer.Option(help="registered model (id or id@version), or a "
                                            "built-in credit model's name")],
    input: Annotated[Path, typer.Option(help="CSV or Parquet rows with the raw features")],
    output: Annotated[Path, typer.Option(help="folder for the shards and the manifest")],
    method: Annotated[str | None, typer.Option(
        help="explanation method (default: the model's policy's first)")] = None,
    param: Annotated[list[str] | None, typer.Option(
        help="method parameter NAME=VALUE (repeatable; VALUE read as JSON when it parses)")
                     ] = None,
    address: Annotated[str | None, typer.Option(
        help="a running Ray cluster: auto, host:port or ray://host:port (default: Ray on "
             "this machine)")] = None,
    cpus: Annotated[int | None, typer.Option(
        help="cores for a local Ray (default: all of them)")] = None,
    shard_rows: Annotated[int, typer.Option(help="rows per shard (one task, one file)")
                          ] = 4096,
    cpus_per_task: Annotated[int, typer.Option(
        help="cores per task, torch's threads in it (more for large model calls)")] = 1,
    key: Annotated[str | None, typer.Option(
        help="the input's column that identifies a row (default: its row number)")] = None,
    seed: Annotated[int, typer.Option(help="the batch's random seed")] = 0,
    record: Annotated[bool, typer.Option(
        "--record", help="also record each row as a decision with its report in the store "
                         "(and the audit log)")] = False,
    subject: Annotated[str | None, typer.Option(
        help="with --record: the column of each row's subject id (default: row-KEY)")
                       ] = None,
) -> None:
    """Explain every row of --input into Parquet shards in --output, with a manifest.

    Started again with the same arguments, a batch resumes: finished shards are kept (and
    with --record, each decision is written once)."""
    from xai_sandbox.workflows import Decider
    from xai_sandbox.workflows.batch import BatchProgress, explain_batch

    progress = Progress(TextColumn("explaining"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("rows · {task.fields[rate]:,.0f} rows/s"),
                        TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
                        console=console, transient=False)
    bar = progress.add_task("rows", total=None, rate=0.0)

    def show(p: BatchProgress) -> None:
        progress.update(bar, completed=p.rows_done, total=p.rows_total, rate=p.rows_per_s)

    try:
        params = parse_params(param or [])
        store = open_store()
        try:
            decider = Decider(store)
            decider.load_registered()
            served = served_model(decider, model)
            with progress:
                result = explain_batch(served, input, output, method=method, params=params,
                                       seed=seed, shard_rows=shard_rows, key_column=key,
                                       address=address, num_cpus=cpus,
                                       cpus_per_task=cpus_per_task,
                                       record=store if record else None,
                                       subject_column=subject, progress=show)
        finally:
            store.close()
    except XaiSandboxError as exc:
        raise fail(exc) from None
    except KeyboardInterrupt:
        done = sorted(p.name for p in output.glob("part-*.parquet"))
        console.print(f"stopped: {len(done)} shards are written in {output}; run the same "
                      "command again to resume", soft_wrap=True, markup=False)
        raise typer.Exit(code=130) from None
    if result.shards_computed:
        console.print(
            f"explained {result.rows:,} rows with {result.manifest['method']} in "
            f"{result.elapsed_s:.1f} s on {result.cores:g} cores "
            f"({result.shards_computed} shards computed, {result.shards_skipped} kept)",
            soft_wrap=True, markup=False)
    else:
        console.print(f"nothing to compute: all {result.shards_skipped} shards "
                      f"({result.rows:,} rows) were written before", markup=False)
    if record:
        console.print(f"recorded {result.recorded:,} decisions with their reports "
                      "(`xai-sandbox audit verify` checks the log)", markup=False,
                      soft_wrap=True)
    console.print(f"shards and manifest: {output / 'manifest.json'}", soft_wrap=True,
                  markup=False)


@batch.command("report")
def report(
    output: Annotated[Path, typer.Argument(help="a finished batch's folder")],
    previous: Annotated[Path | None, typer.Option(
        help="an earlier batch's folder: adds the drift of the attributions")] = None,
    sample_rows: Annotated[int, typer.Option(
        help="rows sampled for the intervals, the plots and the drift test")] = 10_000,
    seed: Annotated[int, typer.Option(help="the sample's and bootstrap's seed")] = 0,
) -> None:
    """Write the batch's global report (JSON, HTML, PDF) into its folder."""
    from xai_sandbox.reports.global_report import (
        render_global_html,
        render_global_json,
        render_global_pdf,
    )
    from xai_sandbox.workflows import Decider
    from xai_sandbox.workflows.batch import batch_model_key
    from xai_sandbox.workflows.batch_report import global_report

    try:
        key = batch_model_key(output)
        store = open_store()
        try:
            decider = Decider(store)
            decider.load_registered()
            served = decider.model_by_key(key)
        finally:
            store.close()
        found = global_report(served, output, previous=previous, sample_rows=sample_rows,
                              seed=seed)
        html = render_global_html(found)
        (output / "global-report.json").write_bytes(render_global_json(found))
        (output / "global-report.html").write_text(html, encoding="utf-8")
        (output / "global-report.pdf").write_bytes(render_global_pdf(found))
    except XaiSandboxError as exc:
        raise fail(exc) from None
    top = ", ".join(f"{f.feature} {f.share:.0%}" for f in found.importance[:3])
    console.print(f"{found.rows:,} rows; the largest shares of |attribution|: {top}",
                  soft_wrap=True, markup=False)
    if found.drift is not None:
        moved = [d["feature"] for d in found.drift if d["drifted"]]
        console.print(f"drifted since {previous}: {', '.join(moved) or 'none'}",
                      soft_wrap=True, markup=False)
    console.print(f"report: {output / 'global-report.pdf'} (also .html and .json)",
                  soft_wrap=True, markup=False)
