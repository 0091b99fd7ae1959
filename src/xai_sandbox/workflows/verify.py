"""Verify the log: every entry, node and checkpoint of the store's audit log recomputed,
and every recorded row matched to its entry (:func:`xai_sandbox.store.verify.verify_log`,
over the pure checks of :mod:`xai_sandbox.audit.verify`)."""

from __future__ import annotations

from collections.abc import Sequence

from xai_sandbox.audit.notes import Verifier
from xai_sandbox.audit.verify import Progress, VerifyReport
from xai_sandbox.store.store import Store
from xai_sandbox.store.verify import verify_log

__all__ = ["verify_store"]


def verify_store(store: Store, verifiers: Sequence[Verifier] | None = None, *,
                 workers: int | None = None, progress: Progress | None = None,
                 trusted: str | None = None) -> VerifyReport:
    """Verify ``store``'s log against ``verifiers`` (default: the keys the store trusts)
    and, given ``trusted`` (a checkpoint note saved earlier), that the log extends it."""
    keys = list(verifiers) if verifiers is not None else store.log.verifiers()
    return verify_log(store.engine, keys, store.log.origin, workers=workers, progress=progress,
                      trusted=trusted)
