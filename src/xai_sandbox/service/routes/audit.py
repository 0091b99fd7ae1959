"""The audit log: the latest checkpoint is public (it holds no personal data; publishing
it is what lets others hold the log to it); proofs and entries: auditor,
compliance_officer, admin."""

from __future__ import annotations

import base64
from typing import Annotated

from fastapi import Query

from xai_sandbox.errors import InvalidInputError, NotFoundError
from xai_sandbox.service.deps import AUDIT_READERS, PUBLIC, RT, Runtime, Who, require
from xai_sandbox.service.schemas import Checkpoint, ConsistencyProof, InclusionProof, LogEntries
from xai_sandbox.service.strict import resource_router
from xai_sandbox.store.queries import log_entries

router = resource_router("audit")


def _b64(items: list[bytes]) -> list[str]:
    return [base64.b64encode(h).decode() for h in items]


@router.get("/v1/audit/checkpoint", openapi_extra=PUBLIC)
def checkpoint(rt: RT) -> Checkpoint:
    """The latest signed checkpoint (C2SP signed note) and the keys that verify it.
    Public: it commits to the log without revealing any entry."""
    latest = rt.store.log.latest_checkpoint() or rt.store.log.checkpoint()
    return Checkpoint(origin=rt.store.log.origin, size=latest[0], checkpoint=latest[1],
                      verifier_keys=[v.encode() for v in rt.store.log.verifiers()])


@router.get("/v1/audit/proofs/inclusion")
def inclusion(rt: RT, who: Who, index: Annotated[int, Query(ge=0, le=2**56)],
              size: Annotated[int | None, Query(ge=1, le=2**56)] = None) -> InclusionProof:
    """RFC 9162 inclusion proof of entry ``index`` in the tree of ``size`` entries
    (default: the latest checkpoint's size)."""
    require(who, *AUDIT_READERS)
    size = size if size is not None else _checkpoint_size(rt)
    if index >= size:
        raise InvalidInputError("index", f"must be below the tree size {size}", index)
    return InclusionProof(index=index, size=size,
                          proof=_b64(rt.store.log.inclusion_proof(index, size)))


@router.get("/v1/audit/proofs/consistency")
def consistency(rt: RT, who: Who, old: Annotated[int, Query(ge=1, le=2**56)],
                new: Annotated[int | None, Query(ge=1, le=2**56)] = None) -> ConsistencyProof:
    """RFC 9162 consistency proof between the trees of ``old`` and ``new`` entries."""
    require(who, *AUDIT_READERS)
    new = new if new is not None else _checkpoint_size(rt)
    if old > new:
        raise InvalidInputError("old", f"must not exceed new ({new})", old)
    return ConsistencyProof(old=old, new=new,
                            proof=_b64(rt.store.log.consistency_proof(old, new)))


@router.get("/v1/audit/entries")
def entries(rt: RT, who: Who, start: Annotated[int, Query(ge=0, le=2**56)] = 0,
            end: Annotated[int | None, Query(ge=1, le=2**56)] = None) -> LogEntries:
    """Log entries ``start`` to ``end`` (exclusive, at most 1000): their bodies hold
    identifiers, commitments and hashes, never personal data."""
    require(who, *AUDIT_READERS)
    size = rt.store.log.size()
    end = min(end if end is not None else size, size, start + 1000)
    if start > end:
        raise InvalidInputError("start", f"must not exceed the end of the range ({end})",
                                start)
    return LogEntries.model_validate({"start": start, "end": end, "size": size,
                                      "entries": log_entries(rt.store, start, end)})


def _checkpoint_size(rt: Runtime) -> int:
    latest = rt.store.log.latest_checkpoint() or rt.store.log.checkpoint()
    if latest[0] == 0:
        raise NotFoundError("size", "needs a non-empty log", 0)
    return latest[0]
