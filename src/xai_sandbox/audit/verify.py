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
import multiprocessing
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
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


def _pages(conn: Connection, first: int, end: int) -> Iterator[Sequence[Any]]:
    for start in range(first, end, _PAGE):
        yield conn.execute(select(t.log_entries).where(
            t.log_entries.c.idx >= start, t.log_entries.c.idx < min(end, start + _PAGE))
            .order_by(t.log_entries.c.idx)).fetchall()


def _records(conn: Connection, page: Sequence[Any]) -> dict[str, Mapping[str, Any]]:
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
                                    ).mappings().fetchall():
                found[f"{table_name}:{rec['key' if table_name == 'models' else 'id']}"] = rec
    return found


Progress = Callable[[int, int], None]


def _scan(conn: Connection, start: int, end: int, purged: frozenset[str],
          progress: Progress | None = None) -> tuple[list[bytes], str | None]:
    """Check entries [start, end): numbering, leaf hashes, and bodies against records.

    Returns their leaf hashes (up to the first problem) and the first problem, if any;
    ``progress(entries checked, entries in all)`` is called after each page.
    """
    leaves: list[bytes] = []
    expected = start
    for page in _pages(conn, start, end):
        records = _records(conn, page)
        for row in page:
            where = f"entry {row.idx} ({row.kind} {row.record_id})"
            if row.idx != expected:
                return leaves, f"entry {expected}: missing (next stored entry is {row.idx})"
            expected += 1
            body = bytes(row.body)
            if hashlib.sha256(b"\x00" + body).digest() != bytes(row.leaf_hash):
                return leaves, f"{where}: leaf hash is not SHA-256(0x00 || body)"
            builder = ENTRY_BUILDERS.get(row.kind)
            if builder is None or KIND_TABLE[row.kind] != row.record_id.partition(":")[0]:
                return leaves, f"{where}: unknown kind or wrong record table"
            record = records.get(row.record_id)
            if record is None:
                if row.record_id not in purged:
                    return leaves, f"{where}: record is missing and no purge was logged"
            elif canonical_json(builder(record)) != body:
                return leaves, f"{where}: stored record does not match its log entry"
            leaves.append(bytes(row.leaf_hash))
        if progress is not None:
            progress(expected, end)
    if expected != end:
        return leaves, f"entry {expected}: missing (the log head counts {end} or more)"
    return leaves, None


def _scan_url(url: str, start: int, end: int, purged: frozenset[str]
              ) -> tuple[list[bytes], str | None]:
    """:func:`_scan` in a worker process, on its own connection."""
    from xai_sandbox.store.store import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return _scan(conn, start, end, purged)
    finally:
        engine.dispose()


def verify_log(engine: Engine, verifiers: list[Verifier], origin: str,
               workers: int | None = None, progress: Progress | None = None
               ) -> VerifyReport:
    """Check everything; the report lists problems, the first naming the first bad entry.

    Entries are checked in ``workers`` processes (default: one per core for logs of more
    than 50,000 entries in a file or server database), each on its own range.
    ``progress(entries checked, entries in all)`` follows the entries (in one process:
    page by page; in several: at the end).
    """
    report = VerifyReport()
    tree = MemoryTree()
    with engine.connect() as conn:
        head = int(conn.execute(select(t.log_head.c.size)).scalar_one())
        purged = frozenset(f"{r.record_type}:{r.record_id}" for r in conn.execute(
            select(t.purges.c.record_type, t.purges.c.record_id)))
        url = engine.url.render_as_string(hide_password=False)
        if workers is None:
            workers = min(4, os.cpu_count() or 1) if head > 50_000 else 1
        if workers > 1 and ":memory:" not in url and engine.url.database:
            bounds = [head * k // workers for k in range(workers + 1)]
            # fork: the workers need no importable __main__ and open their own engines.
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                parts = list(pool.map(_scan_url, [url] * workers, bounds[:-1], bounds[1:],
                                      [purged] * workers))
        else:
            parts = [_scan(conn, 0, head, purged, progress)]
        for leaves, problem in parts:
            tree.extend(leaves)
            if problem is not None:
                report.entries = tree.size
                report.fail(problem)
                return report
        report.entries = tree.size
        if progress is not None:
            progress(head, head)
        # Stored nodes against the recomputed ones.
        seen = 0
        nodes = tree.nodes
        result = conn.execute(select(t.log_nodes.c.node, t.log_nodes.c.hash)
                              .order_by(t.log_nodes.c.node))
        for part in result.partitions(20_000):
            for key, stored in part:
                seen += 1
                level, idx = t.node_position(key)
                if nodes.get((level, idx)) != bytes(stored):
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
