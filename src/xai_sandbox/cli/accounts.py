"""``xai-sandbox users``: principals, their roles and their API keys."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from xai_sandbox.errors import XaiSandboxError

if TYPE_CHECKING:
    from xai_sandbox.store import Store

from xai_sandbox.cli.common import console, fail, open_store, users


def _accounts() -> tuple[Store, Any]:
    from xai_sandbox.store.accounts import Accounts

    store = open_store()
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
        raise fail(exc) from exc
    console.print(f"created {name} ({', '.join(sorted(role))})")
    print(key)


@users.command("key")
def users_key(name: Annotated[str, typer.Argument(help="principal name")],
              label: Annotated[str, typer.Option(help="what the key is for")] = "cli") -> None:
    """Issue another API key for a principal (printed once; stored only as a hash)."""
    try:
        key = _accounts()[1].issue_key(name, label)
    except XaiSandboxError as exc:
        raise fail(exc) from exc
    print(key)


@users.command("revoke")
def users_revoke(key_id: Annotated[str, typer.Argument(help="the key id: xai_<key id>_...")]
                 ) -> None:
    """Revoke an API key."""
    try:
        _accounts()[1].revoke_key(key_id)
    except XaiSandboxError as exc:
        raise fail(exc) from exc
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
        raise fail(exc) from exc
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
        raise fail(exc) from exc
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
