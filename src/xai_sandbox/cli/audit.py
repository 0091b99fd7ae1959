"""``xai-sandbox audit``: verify the log, check receipts, prove consistency, keys, erasure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from xai_sandbox.errors import InvalidInputError, XaiSandboxError

if TYPE_CHECKING:
    from xai_sandbox.audit.notes import Verifier
    from xai_sandbox.store import Store

from xai_sandbox.cli.common import audit, console, fail, open_store


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
    trusted: Annotated[Path | None, typer.Option(
        help="a checkpoint saved earlier (xai-sandbox audit checkpoint > FILE, or a "
             "witness's copy): the log must extend it, so a rollback or a rebuilt history "
             "fails")] = None,
) -> None:
    """Recompute every leaf, node, checkpoint signature and consistency; exit 1 on tampering."""
    from xai_sandbox.workflows.verify import verify_store

    try:
        note = None
        if trusted is not None:
            try:
                note = trusted.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise InvalidInputError("--trusted", "must be a readable checkpoint file",
                                        str(trusted)) from exc
        store = open_store()
        report = verify_store(store, _verifiers(pubkey, store), trusted=note)
    except XaiSandboxError as exc:
        raise fail(exc) from exc
    if report.ok:
        extends = (f"; extends the trusted checkpoint of {report.trusted_size} entries"
                   if report.trusted_size is not None else "")
        console.print(f"OK: {report.entries} entries, {report.nodes} nodes, "
                      f"{report.checkpoints} checkpoints verified{extends}")
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
        store = open_store()
        proof = store.log.consistency_proof(old, new)
        doc = {"old_size": old, "new_size": new,
               "old_root": base64.b64encode(store.log.root(old)).decode(),
               "new_root": base64.b64encode(store.log.root(new)).decode(),
               "proof": [base64.b64encode(p).decode() for p in proof]}
    except XaiSandboxError as exc:
        raise fail(exc) from exc
    print(json.dumps(doc, indent=2))


@audit.command("checkpoint")
def audit_checkpoint() -> None:
    """Sign a checkpoint of the current log (after proving it consistent with the last)."""
    try:
        _, note = open_store().log.checkpoint()
    except XaiSandboxError as exc:
        raise fail(exc) from exc
    print(note, end="")


@audit.command("pubkey")
def audit_pubkey() -> None:
    """Print the log's current verifier key (publish it for auditors)."""
    print(open_store().keys.signer().verifier.encode())


@audit.command("rotate-key")
def audit_rotate_key() -> None:
    """Start signing with a new key; the old one stays trusted for old checkpoints. The
    rotation is a log entry endorsed by the old key, so `verify --pubkey OLD` follows it."""
    try:
        print(open_store().log.rotate_key().verifier.encode())
    except XaiSandboxError as exc:
        raise fail(exc) from exc


@audit.command("export-witness")
def audit_export_witness(
    to: Annotated[str, typer.Option(help="file, folder or http(s) URL of the witness")],
) -> None:
    """Publish the newest signed checkpoint to a witness outside the operator's control."""
    from xai_sandbox.audit.witness import publish_checkpoint

    try:
        _, note = open_store().log.checkpoint()
        where = publish_checkpoint(note, to)
    except XaiSandboxError as exc:
        raise fail(exc) from exc
    console.print(f"checkpoint published to {where}")


@audit.command("erase")
def audit_erase(subject: Annotated[str, typer.Argument(help="the subject's identifier")]
                ) -> None:
    """Erase one subject's personal payloads (GDPR); the log still verifies."""
    try:
        leaves = open_store().erase_subject(subject)
    except XaiSandboxError as exc:
        raise fail(exc) from exc
    console.print(f"erased {len(leaves)} payload(s)")


@audit.command("hold")
def audit_hold(decision: Annotated[str, typer.Argument(help="decision id")],
               release: Annotated[bool, typer.Option(help="release the hold")] = False) -> None:
    """Put a decision on legal hold (kept past retain-until), or release it."""
    try:
        open_store().set_legal_hold(decision, not release)
    except XaiSandboxError as exc:
        raise fail(exc) from exc
    console.print(f"legal hold {'released' if release else 'set'} on {decision}")


@audit.command("purge")
def audit_purge() -> None:
    """Delete decisions past their retain-until date that are not on legal hold."""
    try:
        purged = open_store().purge()
    except XaiSandboxError as exc:
        raise fail(exc) from exc
    console.print(f"purged {len(purged)} decision(s)")
