"""The audit log: the checkpoint and its keys, offline receipt checks, consistency between
two signed checkpoints, and full verification with its progress."""

from __future__ import annotations

import base64
import json
from typing import Annotated, Any

from fastapi import File, Query, UploadFile
from fastapi.responses import HTMLResponse, Response

from xai_sandbox.audit.log import Receipt, check_receipt
from xai_sandbox.audit.merkle import ProofError, verify_consistency
from xai_sandbox.audit.notes import NoteError, parse_checkpoint, verify_note
from xai_sandbox.errors import InvalidInputError
from xai_sandbox.service.console.pages import AUDIT_PAGES, Csrf, P, Page, area_router, redirect
from xai_sandbox.store.entries import rfc3339
from xai_sandbox.store.queries import checkpoint_notes, recent_checkpoints

router = area_router()


def _audit_page(p: Page, status: int = 200, **values: Any) -> HTMLResponse:
    log = p.rt.store.log
    latest = log.latest_checkpoint()
    checkpoints = [{"size": size, "signed_at": rfc3339(signed_at)}
                   for size, signed_at in recent_checkpoints(p.rt.store, 100)]
    values.setdefault("receipt", None)
    values.setdefault("consistency", None)
    return p.render("audit.html", status=status, latest=latest, origin=log.origin,
                    size=log.size(), keys=[v.encode() for v in log.verifiers()],
                    checkpoints=checkpoints, **values)


@router.get("/audit")
def audit(p: P) -> HTMLResponse:
    """The latest checkpoint and its key; receipts, consistency and full verification."""
    p.require(*AUDIT_PAGES)
    return _audit_page(p)


@router.post("/audit/receipt")
async def audit_receipt(p: P, csrf: Csrf = None,
                        receipt: Annotated[UploadFile | None, File()] = None) -> HTMLResponse:
    """Check an uploaded receipt offline: signature, leaf hash and inclusion proof."""
    p.check_csrf(csrf)
    p.require(*AUDIT_PAGES)
    if receipt is None:
        raise InvalidInputError("receipt", "must be a receipt file (JSON)", None)
    raw = await receipt.read()
    try:
        parsed = Receipt.from_json(raw)
        entry = check_receipt(parsed, p.rt.store.log.verifiers())
        result = {"ok": True, "entry": entry, "leaf_index": parsed.leaf_index,
                  "name": receipt.filename}
        status = 200
    except (InvalidInputError, NoteError, ProofError, ValueError) as exc:
        result = {"ok": False, "error": str(exc), "name": receipt.filename}
        status = 422
    return _audit_page(p, status=status, receipt=result)


@router.get("/audit/consistency")
def audit_consistency(p: P, old: Annotated[int, Query(ge=1, le=2**56)],
                      new: Annotated[int, Query(ge=1, le=2**56)]) -> HTMLResponse:
    """Prove that the log at one checkpoint extends the log at an earlier one, and check
    the proof against both signed roots here."""
    p.require(*AUDIT_PAGES)
    if old >= new:
        raise InvalidInputError("old", f"must be smaller than new ({new})", old)
    notes = checkpoint_notes(p.rt.store, [old, new])
    for name, size in (("old", old), ("new", new)):
        if size not in notes:
            raise InvalidInputError(name, "must be the size of a signed checkpoint", size)
    verifiers = p.rt.store.log.verifiers()
    roots = {size: parse_checkpoint(verify_note(notes[size], verifiers)[0]).root
             for size in (old, new)}
    proof = p.rt.store.log.consistency_proof(old, new)
    try:
        verify_consistency(old, new, roots[old], roots[new], proof)
        ok, error = True, None
    except ProofError as exc:  # pragma: no cover - only a tampered store gets here
        ok, error = False, str(exc)
    result = {"old": old, "new": new, "ok": ok, "error": error,
              "old_root": base64.b64encode(roots[old]).decode(),
              "new_root": base64.b64encode(roots[new]).decode(),
              "proof": [base64.b64encode(h).decode() for h in proof]}
    return _audit_page(p, consistency=result)


@router.post("/audit/verify")
def audit_verify(p: P, csrf: Csrf = None) -> Response:
    """Start a full verification (or join the one running) and follow its progress."""
    p.check_csrf(csrf)
    p.require(*AUDIT_PAGES)
    run = p.rt.verifications.start(p.who.name)
    return redirect(f"/console/audit/verify/{run.id}")


@router.get("/audit/verify/{run_id}")
def audit_verify_page(run_id: str, p: P) -> HTMLResponse:
    p.require(*AUDIT_PAGES)
    return p.render("verify.html", run=p.rt.verifications.get(run_id).to_dict())


@router.get("/audit/verify/{run_id}/status")
def audit_verify_status(run_id: str, p: P) -> Response:
    """The progress as JSON, for the page's script."""
    p.require(*AUDIT_PAGES)
    return Response(json.dumps(p.rt.verifications.get(run_id).to_dict()),
                    media_type="application/json")
