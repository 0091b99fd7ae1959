"""Verification of a Merkle log from its entries up, over wherever the log is kept.

1. Entries are numbered 0..n-1 with no gap; each leaf hash is SHA-256(0x00 || body); a
   caller's check of each entry's body (the store rebuilds it from its record) passes.
2. Every stored node equals the node recomputed from the leaves, and no node is missing
   or extra.
3. Every checkpoint is signed by a trusted key, names this log, and its root is the root
   recomputed at its size; consecutive checkpoints are proven consistent.

The first problem found is reported with the entry, node or checkpoint it concerns. The
store's verification (:mod:`xai_sandbox.store.verify`) feeds these from its tables and
adds the checks of the records themselves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from xai_sandbox.audit.log import Entry
from xai_sandbox.audit.merkle import MemoryTree, ProofError, verify_consistency
from xai_sandbox.audit.notes import (
    Checkpoint,
    NoteError,
    Verifier,
    parse_checkpoint,
    verify_note,
)

__all__ = ["EntryCheck", "EntryScan", "Progress", "VerifyReport", "check_checkpoints",
           "check_nodes", "check_trusted", "scan_entries"]

Progress = Callable[[int, int], None]
# The caller's check of one entry (its body given as bytes, and how to name the entry in a
# problem): the problem, or None when the entry is right.
EntryCheck = Callable[[Entry, bytes, str], str | None]


@dataclass
class VerifyReport:
    entries: int = 0
    nodes: int = 0
    checkpoints: int = 0
    principals: int = 0
    api_keys: int = 0
    facets: int = 0
    trusted_size: int | None = None   # the trusted checkpoint's size, once it held
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def fail(self, message: str) -> None:
        self.problems.append(message)


@dataclass
class EntryScan:
    """What a scan of entries [start, end) found: the leaf hashes up to the first problem,
    and that problem."""

    leaves: list[bytes] = field(default_factory=list)
    problem: str | None = None


def scan_entries(pages: Iterable[Sequence[Entry]], start: int, end: int,
                 check: EntryCheck | None = None, progress: Progress | None = None
                 ) -> EntryScan:
    """Check entries [start, end), given in order in pages: numbering, leaf hashes, then
    ``check`` of each. ``progress(entries checked, end)`` is called after each page."""
    found = EntryScan()
    leaves = found.leaves
    expected = start
    for page in pages:
        for row in page:
            if row.idx != expected:
                found.problem = f"entry {expected}: missing (next stored entry is {row.idx})"
                return found
            expected += 1
            where = f"entry {row.idx} ({row.kind} {row.record_id})"
            body = bytes(row.body)
            if hashlib.sha256(b"\x00" + body).digest() != bytes(row.leaf_hash):
                found.problem = f"{where}: leaf hash is not SHA-256(0x00 || body)"
                return found
            if check is not None:
                problem = check(row, body, where)
                if problem is not None:
                    found.problem = problem
                    return found
            leaves.append(bytes(row.leaf_hash))
        if progress is not None:
            progress(expected, end)
    if expected != end:
        found.problem = f"entry {expected}: missing (the log head counts {end} or more)"
    return found


def check_nodes(tree: MemoryTree, stored: Iterable[tuple[int, int, bytes]],
                report: VerifyReport) -> None:
    """Stored nodes (level, index, hash) against those of the tree recomputed from the
    entries: each equal, none missing. Counts them in ``report.nodes``."""
    seen = 0
    nodes = tree.nodes
    for level, idx, hash_ in stored:
        seen += 1
        if nodes.get((level, idx)) != hash_:
            report.fail(f"node ({level}, {idx}) over entries from {idx << level}: "
                        "does not match the tree recomputed from the entries")
            return
    if seen != len(tree.nodes):
        report.fail(f"log_nodes: {len(tree.nodes) - seen} nodes missing")
        return
    report.nodes = seen


def _signed(note: str, verifiers: list[Verifier], where: str, report: VerifyReport
            ) -> Checkpoint | None:
    """The checkpoint a note signs, or ``None`` (and the problem reported)."""
    try:
        body, _ = verify_note(note, verifiers)
        return parse_checkpoint(body)
    except NoteError as exc:
        report.fail(f"{where}: {exc}")
        return None


def check_checkpoints(tree: MemoryTree, stored: Iterable[tuple[int, bytes, str]],
                      verifiers: list[Verifier], origin: str, report: VerifyReport) -> None:
    """Stored checkpoints (size, root, note), smallest first, against the recomputed tree.
    Counts them in ``report.checkpoints``."""
    prev: tuple[int, bytes] | None = None
    for size, root, note in stored:
        where = f"checkpoint at size {size}"
        cp = _signed(note, verifiers, where, report)
        if cp is None:
            return
        if cp.origin != origin or cp.size != size or cp.root != root:
            report.fail(f"{where}: signed body does not match the stored checkpoint")
            return
        if cp.size > tree.size or tree.root(cp.size) != cp.root:
            report.fail(f"{where}: signed root is not the root of the stored entries "
                        f"0..{cp.size - 1}")
            return
        if prev is not None:
            try:
                verify_consistency(prev[0], cp.size, prev[1], cp.root,
                                   tree.consistency_proof(prev[0], cp.size))
            except ProofError as exc:
                report.fail(f"{where}: not consistent with the checkpoint at {prev[0]}: {exc}")
                return
        prev = (cp.size, cp.root)
        report.checkpoints += 1


def check_trusted(tree: MemoryTree, note: str, verifiers: list[Verifier], origin: str,
                  report: VerifyReport) -> None:
    """The log must extend a checkpoint saved earlier (or fetched from a witness): its
    signature checks against ``verifiers``, it is of this log, and the recomputed tree is
    consistent with it. Dropping the newest entries (rollback) or rebuilding another
    history of the same size fails here, even with every stored checkpoint re-signed."""
    where = "trusted checkpoint"
    cp = _signed(note, verifiers, where, report)
    if cp is None:
        return
    if cp.origin != origin:
        report.fail(f"{where}: is of the log {cp.origin!r}, not {origin!r}")
        return
    if cp.size > tree.size:
        report.fail(f"{where}: rolled back: the trusted checkpoint covers {cp.size} entries, "
                    f"the log now holds {tree.size}")
        return
    try:
        if cp.size:  # every log extends the empty one
            verify_consistency(cp.size, tree.size, cp.root, tree.root(tree.size),
                               tree.consistency_proof(cp.size, tree.size))
    except ProofError as exc:
        report.fail(f"{where}: the log is not an extension of it (a different history of "
                    f"its first {cp.size} entries): {exc}")
        return
    report.trusted_size = cp.size
