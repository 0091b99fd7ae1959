"""``xai-sandbox``: a thin command line over the library."""

from __future__ import annotations

import csv
import json
import struct
import warnings
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from xai_sandbox.errors import InvalidInputError, XaiSandboxError

if TYPE_CHECKING:
    from xai_sandbox.audit.notes import Verifier
    from xai_sandbox.store import Store

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Explain model decisions: attributions, heatmaps and reports.")
console = Console()


def _fail(exc: Exception) -> typer.Exit:
    # One line, however wide the terminal; the message is text, never markup (a value
    # such as "[/x]" read from a file would otherwise end in rich's own traceback).
    console.print(f"[red]error:[/red] {escape(' '.join(str(exc).split()))}", soft_wrap=True)
    return typer.Exit(code=2)


@app.command()
def methods() -> None:
    """List the registered explanation methods."""
    from xai_sandbox.explainers import available_methods

    table = Table(title="explanation methods")
    table.add_column("method")
    table.add_column("needs")
    table.add_column("what it does")
    for name, needs, summary in available_methods():
        table.add_row(name, needs, summary)
    console.print(table)
    from xai_sandbox.text.methods import TEXT_METHODS

    text = Table(title="text and LLM methods")
    text.add_column("method")
    text.add_column("needs")
    text.add_column("what it does")
    for name, method in sorted(TEXT_METHODS.items()):
        text.add_row(name, method.needs, method.summary)
    console.print(text)


def _parse_params(items: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise InvalidInputError("--param", "must look like NAME=VALUE", item)
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    return params


def _csv_row(path: Path, row: int) -> dict[str, Any]:
    records = _csv_rows(path, "--csv")
    if not 0 <= row < len(records):
        raise InvalidInputError("--row", f"must be in [0, {len(records)})", row)
    return records[row]


def _csv_rows(path: Path, option: str = "--data") -> list[dict[str, Any]]:
    """Every row of a CSV file (UTF-8, a byte-order mark allowed); numbers as floats,
    anything else as text."""
    records: list[dict[str, Any]] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            records.extend(csv.DictReader(fh))
    except OSError as exc:
        raise InvalidInputError(option, f"must be a readable file ({exc.strerror})",
                                str(path)) from exc
    except UnicodeDecodeError as exc:
        raise InvalidInputError(option, f"must be UTF-8 text (byte 0x{exc.object[exc.start]:02x} "
                                        "is not)", str(path)) from None
    except csv.Error as exc:  # a field over csv.field_size_limit(), say
        raise InvalidInputError(option, f"must be a CSV file (row {len(records)}: {exc})",
                                str(path)) from None
    out = []
    for i, record in enumerate(records):
        if None in record:
            raise InvalidInputError(option, f"row {i} has more fields than the header",
                                    str(path))
        row: dict[str, Any] = {}
        for key, value in record.items():
            try:
                row[key] = float(value)
            except (TypeError, ValueError):
                row[key] = value
        out.append(row)
    return out


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
        record = _csv_row(csv_path, row) if csv_path is not None else None
        x: Any = None
        pixels: Any = None
        if image is not None:
            x, pixels = _image_input(image)
        from xai_sandbox.demos.catalog import builtin_model
        from xai_sandbox.explainers import explain

        registered = builtin_model(model)
        params = _parse_params(param or [])
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
        raise _fail(exc) from exc


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
def models() -> None:
    """List the built-in models."""
    from xai_sandbox.demos.catalog import BUILTIN_MODELS

    for name in sorted(BUILTIN_MODELS):
        console.print(name)


@app.command()
def demo(out: Annotated[Path, typer.Option(help="output folder")] = Path("xai-output")) -> None:
    """Explain a rejected German credit applicant and a cat photo; write JSON and PNGs."""
    from xai_sandbox.demos.run import run_demo

    try:
        result = run_demo(out, console)
    except XaiSandboxError as exc:
        raise _fail(exc) from exc
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
    from xai_sandbox.reports.pipeline import Decider

    decider = Decider(_store())
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
    X = served.schema.encode(_csv_rows(data)[:rows])
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
        raise _fail(exc) from exc
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
        raise _fail(exc) from exc
    console.print("\n[bold]LLM audit written:[/bold]")
    for path in (result.html, result.pdf, result.json):
        console.print(f"  {path.resolve()}")


audit = typer.Typer(no_args_is_help=True, help="The tamper-evident audit log.")
app.add_typer(audit, name="audit")


def _store() -> Store:
    from xai_sandbox.store import Store

    return Store()


def _verifiers(pubkeys: list[str] | None, store: Store | None = None) -> list[Verifier]:
    """Verifier keys from files or literal strings; the store's own trust list otherwise."""
    from xai_sandbox.audit.notes import parse_verifier

    if not pubkeys:
        return list(store.keys.verifiers()) if store is not None else []
    found = []
    for item in pubkeys:
        path = Path(item)
        text = path.read_text(encoding="utf-8") if path.is_file() else item
        found += [parse_verifier(line) for line in text.splitlines() if line.strip()]
    return found


@audit.command("verify")
def audit_verify(
    pubkey: Annotated[list[str] | None, typer.Option(help="trusted verifier key (file or "
                                                     "name+hash+key); default: the store's "
                                                     "own list")] = None,
) -> None:
    """Recompute every leaf, node, checkpoint signature and consistency; exit 1 on tampering."""
    from xai_sandbox.store.verify import verify_log

    try:
        store = _store()
        report = verify_log(store.engine, _verifiers(pubkey, store), store.log.origin)
    except XaiSandboxError as exc:
        raise _fail(exc) from exc
    if report.ok:
        console.print(f"OK: {report.entries} entries, {report.nodes} nodes, "
                      f"{report.checkpoints} checkpoints verified")
        return
    console.print(f"[red]TAMPERED[/red]: {report.problems[0]}")
    raise typer.Exit(code=1)


@audit.command("check-receipt")
def audit_check_receipt(
    receipt: Annotated[Path, typer.Argument(help="receipt JSON file")],
    pubkey: Annotated[list[str], typer.Option(help="the log's verifier key (file or "
                                              "name+hash+key)")],
) -> None:
    """Verify a receipt offline: signature, leaf hash, inclusion proof. No database."""
    from xai_sandbox.audit.log import Receipt, check_receipt

    try:
        verifiers = _verifiers(pubkey)
        try:
            text = receipt.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInputError("RECEIPT", "must be a readable UTF-8 file",
                                    str(receipt)) from exc
        entry = check_receipt(Receipt.from_json(text), verifiers)
    except XaiSandboxError as exc:
        console.print(f"[red]INVALID[/red]: {exc}")
        raise typer.Exit(code=1) from exc
    console.print(f"OK: entry {entry.get('kind')} is in the log under a signed checkpoint")
    console.print_json(data=entry)


@audit.command("prove-consistency")
def audit_prove_consistency(old: Annotated[int, typer.Argument(help="older tree size")],
                            new: Annotated[int, typer.Argument(help="newer tree size")]) -> None:
    """Print the consistency proof between two tree sizes (two checkpoints)."""
    import base64

    try:
        store = _store()
        proof = store.log.consistency_proof(old, new)
        doc = {"old_size": old, "new_size": new,
               "old_root": base64.b64encode(store.log.root(old)).decode(),
               "new_root": base64.b64encode(store.log.root(new)).decode(),
               "proof": [base64.b64encode(p).decode() for p in proof]}
    except XaiSandboxError as exc:
        raise _fail(exc) from exc
    print(json.dumps(doc, indent=2))


@audit.command("checkpoint")
def audit_checkpoint() -> None:
    """Sign a checkpoint of the current log (after proving it consistent with the last)."""
    try:
        _, note = _store().log.checkpoint()
    except XaiSandboxError as exc:
        raise _fail(exc) from exc
    print(note, end="")


@audit.command("pubkey")
def audit_pubkey() -> None:
    """Print the log's current verifier key (publish it for auditors)."""
    print(_store().keys.signer().verifier.encode())


@audit.command("rotate-key")
def audit_rotate_key() -> None:
    """Start signing with a new key; the old one stays trusted for old checkpoints."""
    print(_store().keys.rotate().verifier.encode())


@audit.command("export-witness")
def audit_export_witness(
    to: Annotated[str, typer.Option(help="file, folder or http(s) URL of the witness")],
) -> None:
    """Publish the newest signed checkpoint to a witness outside the operator's control."""
    from xai_sandbox.audit.witness import publish_checkpoint

    try:
        _, note = _store().log.checkpoint()
        where = publish_checkpoint(note, to)
    except XaiSandboxError as exc:
        raise _fail(exc) from exc
    console.print(f"checkpoint published to {where}")


@audit.command("erase")
def audit_erase(subject: Annotated[str, typer.Argument(help="the subject's identifier")]
                ) -> None:
    """Erase one subject's personal payloads (GDPR); the log still verifies."""
    try:
        leaves = _store().erase_subject(subject)
    except XaiSandboxError as exc:
        raise _fail(exc) from exc
    console.print(f"erased {len(leaves)} payload(s)")


@audit.command("hold")
def audit_hold(decision: Annotated[str, typer.Argument(help="decision id")],
               release: Annotated[bool, typer.Option(help="release the hold")] = False) -> None:
    """Put a decision on legal hold (kept past retain-until), or release it."""
    try:
        _store().set_legal_hold(decision, not release)
    except XaiSandboxError as exc:
        raise _fail(exc) from exc
    console.print(f"legal hold {'released' if release else 'set'} on {decision}")


@audit.command("purge")
def audit_purge() -> None:
    """Delete decisions past their retain-until date that are not on legal hold."""
    try:
        purged = _store().purge()
    except XaiSandboxError as exc:
        raise _fail(exc) from exc
    console.print(f"purged {len(purged)} decision(s)")


monitor = typer.Typer(no_args_is_help=True, help="Explanation drift, success rate, alerts.")
app.add_typer(monitor, name="monitor")


@monitor.command("run")
def monitor_run(
    window_days: Annotated[float, typer.Option(help="window length in days")] = 7.0,
    every: Annotated[float, typer.Option(help="repeat every this many seconds (0: once)")] = 0,
    min_reports: Annotated[int, typer.Option(help="reports needed in each window")] = 30,
) -> None:
    """Compare this window's attributions with the previous window's per model and
    feature (PSI, KS, mean |attribution|), check the explanation success rate per hour,
    raise alerts (delivered to XAI_SANDBOX_WEBHOOKS) and print the result as JSON."""
    import time

    from xai_sandbox.monitor.alerts import WebhookDispatcher, parse_webhooks
    from xai_sandbox.monitor.drift import run_checks

    try:
        store = _store()
        hooks = parse_webhooks(store.settings.webhooks)
        while True:
            result = run_checks(store, window_days=window_days, webhooks=hooks,
                                min_reports=min_reports)
            WebhookDispatcher(store).deliver_due()
            print(json.dumps(result, indent=2, default=str))
            if every <= 0:
                return
            time.sleep(every)
    except XaiSandboxError as exc:
        raise _fail(exc) from exc


@monitor.command("fairness")
def monitor_fairness(
    model: Annotated[str, typer.Option(help="model key, e.g. credit@3")],
    limit: Annotated[int, typer.Option(help="decisions to read, newest first")] = 1000,
) -> None:
    """Fairness of a served model on its own recent decisions: how often changing only a
    protected attribute changes the decision, the share of attribution on protected
    features, and the features that are likely proxies for them."""
    import numpy as np

    from xai_sandbox.reports.pipeline import Decider
    from xai_sandbox.semantics.fairness import counterfactual_fairness, likely_proxies

    try:
        store = _store()
        decider = Decider(store)
        decider.load_registered()
        served = decider.model_by_key(model)
        decisions = store.decisions_of(model_key=model, limit=limit)
        rows = [p for p in (store.payload(d["id"]) for d in decisions) if p is not None]
        blocks = [r["body"]["fairness"] for r in
                  (store.latest_report(d["id"]) for d in decisions)
                  if r is not None and "fairness" in r["body"]]
        shares = [b["protected_share"] for b in blocks]
        proxy = [b["proxy_share"] for b in blocks if "proxy_share" in b]
        result = {"model": model, "decisions": len(rows),
                  "counterfactual_fairness": counterfactual_fairness(served.model, rows,
                                                                     data=served.data)
                  if rows else {},
                  "protected_share": {"mean": float(np.mean(shares)),
                                      "max": float(np.max(shares))} if shares else None,
                  "proxy_share": {"mean": float(np.mean(proxy)),
                                  "max": float(np.max(proxy))} if proxy else None,
                  "likely_proxies": likely_proxies(served.schema, rows)
                  if len(rows) >= 50 else "needs at least 50 decisions"}
    except XaiSandboxError as exc:
        raise _fail(exc) from exc
    print(json.dumps(result, indent=2))


@monitor.command("calibrate")
def monitor_calibrate(
    model: Annotated[str, typer.Option(help="model key, e.g. credit@3")],
    precision: Annotated[float, typer.Option(help="target precision of an alert")] = 0.9,
    min_wrong: Annotated[int, typer.Option(help="overridden or reversed reviews needed")] = 5,
) -> None:
    """Pick each anchor's alert threshold from reviewed decisions for a target precision,
    and record the calibration in the audit log (used from the next start)."""
    from xai_sandbox.monitor.calibrate import calibrate, record_calibration

    try:
        store = _store()
        result = calibrate(store, model, target_precision=precision, min_wrong=min_wrong)
        calibration_id, leaf = record_calibration(store, result)
    except XaiSandboxError as exc:
        raise _fail(exc) from exc
    print(json.dumps({**result, "calibration_id": calibration_id, "leaf_index": leaf},
                     indent=2))


users = typer.Typer(no_args_is_help=True, help="Principals and their API keys.")
app.add_typer(users, name="users")


def _accounts() -> tuple[Store, Any]:
    from xai_sandbox.store.accounts import Accounts

    store = _store()
    return store, Accounts(store.engine, store.writer)


@users.command("create")
def users_create(
    name: Annotated[str, typer.Argument(help="principal name")],
    role: Annotated[list[str], typer.Option("--role", help="subject, operator, reviewer, "
                                            "compliance_officer, auditor or admin")],
    subject_id: Annotated[str | None, typer.Option(help="for a subject: their id at the "
                                                   "deployer")] = None,
) -> None:
    """Create a principal and print its first API key (shown once)."""
    try:
        store, accounts = _accounts()
        ref = store.subject_ref(subject_id) if subject_id is not None else None
        accounts.create_principal(name, role, subject_ref=ref)
        key = accounts.issue_key(name)
    except XaiSandboxError as exc:
        raise _fail(exc) from exc
    console.print(f"created {name} ({', '.join(sorted(role))})")
    print(key)


@users.command("key")
def users_key(name: Annotated[str, typer.Argument(help="principal name")],
              label: Annotated[str, typer.Option(help="what the key is for")] = "cli") -> None:
    """Issue another API key for a principal (printed once; stored only as a hash)."""
    try:
        key = _accounts()[1].issue_key(name, label)
    except XaiSandboxError as exc:
        raise _fail(exc) from exc
    print(key)


@users.command("revoke")
def users_revoke(key_id: Annotated[str, typer.Argument(help="the key id: xai_<key id>_...")]
                 ) -> None:
    """Revoke an API key."""
    try:
        _accounts()[1].revoke_key(key_id)
    except XaiSandboxError as exc:
        raise _fail(exc) from exc
    console.print(f"revoked {key_id}")


@users.command("roles")
def users_roles(
    name: Annotated[str, typer.Argument(help="principal name")],
    role: Annotated[list[str], typer.Option("--role", help="the principal's roles from now "
                                            "on (repeat the option for several)")],
) -> None:
    """Replace a principal's roles (an entry in the audit log)."""
    try:
        _accounts()[1].set_roles(name, role)
    except XaiSandboxError as exc:
        raise _fail(exc) from exc
    console.print(f"{name}: roles {', '.join(role)}")


@users.command("disable")
def users_disable(name: Annotated[str, typer.Argument(help="principal name")],
                  enable: Annotated[bool, typer.Option("--enable", help="enable it again")]
                  = False) -> None:
    """Disable a principal (its keys stop working at once), or enable it again; an entry
    in the audit log either way."""
    try:
        _accounts()[1].set_disabled(name, not enable)
    except XaiSandboxError as exc:
        raise _fail(exc) from exc
    console.print(f"{name}: {'enabled' if enable else 'disabled'}")


@users.command("list")
def users_list() -> None:
    """List principals and their roles."""
    table = Table(title="principals")
    table.add_column("name")
    table.add_column("roles")
    table.add_column("created")
    for p in _accounts()[1].principals():
        table.add_row(str(p["name"]), ", ".join(p["roles"]), str(p["created_at"]))
    console.print(table)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
    demo: Annotated[bool, typer.Option(help="register the German credit models, create "
                                       "demo principals and print their keys")] = False,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
    workers: Annotated[int, typer.Option(min=1, max=64, help="server processes (each with "
                                         "its own job workers and rate-limit buckets)")] = 1,
) -> None:
    """Run the REST service (settings from XAI_SANDBOX_* environment variables)."""
    import uvicorn

    from xai_sandbox.service import create_app
    from xai_sandbox.settings import Settings

    settings = Settings()
    if demo:
        from xai_sandbox.service.demo import setup_demo
        from xai_sandbox.store import Store

        store = Store(settings)
        try:
            made = setup_demo(store)
        except XaiSandboxError as exc:
            raise _fail(exc) from exc
        finally:
            store.close()
        console.print("demo principals and their API keys (shown once):")
        for name, key in made["keys"].items():
            print(f"  {name:16} {key}")
        for name, decision in made["decisions"].items():
            console.print(f"{name}'s decision: {decision}")
        print(f"try: curl -H 'Authorization: Bearer {made['keys']['alice']}' "
              f"http://{host}:{port}/v1/decisions")
        console.print(f"API documentation: http://{host}:{port}/docs")
    console.print(f"web console: http://{host}:{port}/console/ (sign in with an API key)")
    if workers == 1:
        uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level,
                    access_log=False)
    else:  # each process builds the app from the same environment
        uvicorn.run("xai_sandbox.service.app:create_app", factory=True, workers=workers,
                    host=host, port=port, log_level=log_level, access_log=False)


if __name__ == "__main__":  # pragma: no cover
    app()
