"""The command line's shared parts: the Typer app and its groups, the console, errors as
one line, and the readers of ``--param`` and CSV input."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape

from xai_sandbox.errors import InvalidInputError

if TYPE_CHECKING:
    from xai_sandbox.store import Store

__all__ = ["app", "audit", "console", "csv_row", "csv_rows", "fail", "monitor", "open_store",
           "parse_params", "users"]

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Explain model decisions: attributions, heatmaps and reports.")
audit = typer.Typer(no_args_is_help=True, help="The tamper-evident audit log.")
app.add_typer(audit, name="audit")
monitor = typer.Typer(no_args_is_help=True, help="Explanation drift, success rate, alerts.")
app.add_typer(monitor, name="monitor")
users = typer.Typer(no_args_is_help=True, help="Principals and their API keys.")
app.add_typer(users, name="users")
console = Console()


def fail(exc: Exception) -> typer.Exit:
    # One line, however wide the terminal; the message is text, never markup (a value
    # such as "[/x]" read from a file would otherwise end in rich's own traceback).
    console.print(f"[red]error:[/red] {escape(' '.join(str(exc).split()))}", soft_wrap=True)
    return typer.Exit(code=2)


def parse_params(items: list[str]) -> dict[str, Any]:
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


def csv_row(path: Path, row: int) -> dict[str, Any]:
    records = csv_rows(path, "--csv")
    if not 0 <= row < len(records):
        raise InvalidInputError("--row", f"must be in [0, {len(records)})", row)
    return records[row]


def csv_rows(path: Path, option: str = "--data") -> list[dict[str, Any]]:
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


def open_store() -> Store:
    """The store the environment's settings name."""
    from xai_sandbox.store import Store

    return Store()
