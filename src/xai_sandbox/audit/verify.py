"""Full verification of a store's audit log, from the stored records up.

1. Entries are numbered 0..n-1 with no gap; each leaf hash is SHA-256(0x00 || body).
2. Each body equals the entry rebuilt from its record (a purged record must have a logged
   purge entry instead).
3. Every stored node equals the node recomputed from the leaves, and no node is missing
   or extra.
4. Every checkpoint is signed by a trusted key, names this log, and its root is the root
   recomputed at its size; consecutive checkpoints are proven consistent.

The first problem found is reported with the entry it concerns.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, select

from xai_sandbox.audit.canonical import canonical_json
from xai_sandbox.audit.merkle import (
    MemoryTree,
    ProofError,
    verify_consistency,
)
from xai_sandbox.audit.notes import NoteError, Verifier, parse_checkpoint, verify_note
from xai_sandbox.store import tables as t
from xai_sandbox.store.entries import ENTRY_BUILDERS, KIND_TABLE

__all__ = ["VerifyReport", "verify_log"]

_PAGE = 5000


@dataclass
class VerifyReport:
    entries: int = 0
    nodes: int = 0
    checkpoints: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def fail(self, message: str) -> None:
        self.problems.append(message)


def _pages(conn: Connection, size: int) -> Iterator[list[Any]]:
    for start in range(0, size, _PAGE):
        yield list(conn.execute(select(t.log_entries).where(
            t.log_entries.c.idx >= start, t.log_entries.c.idx < start + _PAGE)
            .order_by(t.log_entries.c.idx)))


def _records(conn: Connection, page: list[Any]) -> dict[str, Mapping[str, Any]]:
    """The records a page of entries refers to, keyed 'table:id'."""
    wanted: dict[str, list[str]] = {}
    for row in page:
        table, _, rid = row.record_id.partition(":")
        wanted.setdefault(table, []).append(rid)
    found: dict[str, Any] = {}
    for table_name, ids in wanted.items():
        table = t.metadata.tables.get(table_name)
        if table is None:
            continue
        key = table.c.key if table_name == "models" else table.c.id
        for start in range(0, len(ids), 500):
            for rec in conn.execute(select(table).where(key.in_(ids[start:start + 500]))
                                    ).mappings():
                found[f"{table_name}:{rec['key' if table_name == 'models' else 'id']}"] = rec
    return found


def verify_log(engine: Engine, verifiers: list[Verifier], origin: str) -> VerifyReport:
    """Check everything; the report lists problems, the first naming the first bad entry."""
    report = VerifyReport()
    tree = MemoryTree()
    with engine.connect() as conn:
        head = int(conn.execute(select(t.log_head.c.size)).scalar_one())
        purged = {f"{r.record_type}:{r.record_id}" for r in conn.execute(
            select(t.purges.c.record_type, t.purges.c.record_id))}
        expected = 0
        for page in _pages(conn, head):
            records = _records(conn, page)
            leaves = []
            for row in page:
                where = f"entry {row.idx} ({row.kind} {row.record_id})"
                if row.idx != expected:
                    report.fail(f"entry {expected}: missing (next stored entry is {row.idx})")
                    return report
                expected += 1
                body = bytes(row.body)
                if hashlib.sha256(b"\x00" + body).digest() != bytes(row.leaf_hash):
                    report.fail(f"{where}: leaf hash is not SHA-256(0x00 || body)")
                    return report
                builder = ENTRY_BUILDERS.get(row.kind)
                if builder is None or KIND_TABLE[row.kind] != row.record_id.partition(":")[0]:
                    report.fail(f"{where}: unknown kind or wrong record table")
                    return report
                record = records.get(row.record_id)
                if record is None:
                    if row.record_id not in purged:
                        report.fail(f"{where}: record is missing and no purge was logged")
                        return report
                elif canonical_json(builder(record)) != body:
                    report.fail(f"{where}: stored record does not match its log entry")
                    return report
                leaves.append(bytes(row.leaf_hash))
            tree.extend(leaves)
        report.entries = expected
        if expected != head:
            report.fail(f"entry {expected}: missing (the log head says {head} entries)")
            return report
        # Stored nodes against the recomputed ones.
        seen = 0
        for node in conn.execute(select(t.log_nodes).order_by(t.log_nodes.c.node)):
            seen += 1
            level, idx = t.node_position(node.node)
            mine = tree.nodes.get((level, idx))
            if mine is None or mine != bytes(node.hash):
                report.fail(f"node ({level}, {idx}) over entries from {idx << level}: "
                            "does not match the tree recomputed from the entries")
                return report
        if seen != len(tree.nodes):
            report.fail(f"log_nodes: {len(tree.nodes) - seen} nodes missing")
            return report
        report.nodes = seen
        _check_checkpoints(conn, tree, verifiers, origin, report)
    return report


def _check_checkpoints(conn: Connection, tree: MemoryTree, verifiers: list[Verifier],
                       origin: str, report: VerifyReport) -> None:
    prev: tuple[int, bytes] | None = None
    for row in conn.execute(select(t.checkpoints).order_by(t.checkpoints.c.size)):
        where = f"checkpoint at size {row.size}"
        try:
            body, _ = verify_note(row.note, verifiers)
            cp = parse_checkpoint(body)
        except NoteError as exc:
            report.fail(f"{where}: {exc}")
            return
        if cp.origin != origin or cp.size != row.size or cp.root != bytes(row.root):
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
