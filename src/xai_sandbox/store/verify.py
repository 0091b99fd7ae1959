"""Full verification of a store's audit log, from the stored records up.

The log's own checks (:mod:`xai_sandbox.audit.verify`) run over the tables' entries,
nodes and checkpoints; this module adds the records':

1. Each entry's body equals the entry rebuilt from its record (a purged record must have
   a logged purge entry instead).
2. Who may do what: the state entries of principals and API keys, replayed in log order,
   equal the principals and api_keys tables row by row; a row with no entry, a logged
   record missing from its table, and the first field that differs are named.
3. Every row of a logged table has its log entry; a review is pending exactly while the
   log holds no decision of it.
4. The decisions' facets (what the decisions list filters on, what reviewers see) equal
   the facets rebuilt from the logged records by the writes' own rules, in log order.
5. Each decision's personal input, while it is kept, matches the salted commitment its
   logged record holds (an erased input verifies as erased: its row is gone).

The first problem found is reported with the entry or record it concerns.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, func, literal, select

import xai_sandbox.store.tables as t
from xai_sandbox.audit.canonical import canonical_json
from xai_sandbox.audit.merkle import MemoryTree
from xai_sandbox.audit.notes import NoteError, Verifier, follow_rotation
from xai_sandbox.audit.verify import (
    Progress,
    VerifyReport,
    check_checkpoints,
    check_nodes,
    check_trusted,
    scan_entries,
)
from xai_sandbox.store.engine import make_engine
from xai_sandbox.store.entries import (
    ENTRY_BUILDERS,
    KIND_TABLE,
    STATE_BUILDERS,
    STATE_ID,
    rfc3339,
)
from xai_sandbox.store.facets import decision_facets, report_facets

__all__ = ["VerifyReport", "verify_log"]

_PAGE = 5000


def _pages(conn: Connection, first: int, end: int) -> Iterator[Sequence[Any]]:
    for start in range(first, end, _PAGE):
        yield conn.execute(select(t.log_entries).where(
            t.log_entries.c.idx >= start, t.log_entries.c.idx < min(end, start + _PAGE))
            .order_by(t.log_entries.c.idx)).fetchall()


def _records(conn: Connection, page: Sequence[Any]) -> dict[str, Mapping[str, Any]]:
    """The records a page of entries refers to, keyed 'table:id'."""
    wanted: dict[str, list[str]] = {}
    for row in page:
        if row.kind in STATE_BUILDERS:  # replayed against the tables after the scan
            continue
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


@dataclass
class _Scan:
    """What a scan of entries [start, end) found: the leaf hashes up to the first problem,
    that problem, and what the checks after the tree need, in log order."""

    leaves: list[bytes] = field(default_factory=list)
    problem: str | None = None
    states: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    # ("set", decision, facets) | ("update", decision, some facets) | ("drop", decision, None)
    facets: list[tuple[str, str, Any]] = field(default_factory=list)
    decided: list[str] = field(default_factory=list)  # reviews with a logged decision
    logged: dict[str, int] = field(default_factory=dict)  # table: records found by entry
    rotations: list[tuple[int, Any]] = field(default_factory=list)  # key_rotated entries


def _state(row: Any, body: bytes) -> dict[str, Any] | None:
    """The state entry in ``body`` when it is one of ``row``'s kind and record, else None."""
    try:
        entry = json.loads(body)
    except ValueError:
        return None
    if (not isinstance(entry, dict) or entry.get("kind") != row.kind
            or row.record_id != f"{KIND_TABLE[row.kind]}:{entry.get(STATE_ID[row.kind])}"
            or canonical_json(entry) != body):
        return None
    return entry


def _facet_events(kind: str, record: Mapping[str, Any], found: _Scan) -> None:
    """How an entry's (verified) record moves its decision's facets, as the writes do."""
    if kind == "decision_recorded":
        facets = decision_facets(record)
        facets["model_key"] = sys.intern(facets["model_key"])
        facets["outcome"] = sys.intern(facets["outcome"])
        found.facets.append(("set", record["id"], tuple(facets[c] for c in _FACETS)))
    elif kind == "explanation_generated":
        found.facets.append(("update", record["decision_id"],
                             report_facets(json.loads(bytes(record["body"])))))
    elif kind == "review_requested":
        found.facets.append(("update", record["decision_id"], {"review_status": "pending"}))
    elif kind == "review_decided":
        found.facets.append(("update", record["decision_id"],
                             {"review_status": record["status"]}))
        found.decided.append(record["id"])
    elif kind == "record_purged" and record["record_type"] == "decisions":
        found.facets.append(("drop", record["record_id"], None))


class _RecordChecks:
    """The pages of entries of one connection, and the check of each entry against the
    records of its page."""

    def __init__(self, conn: Connection, purged: frozenset[str]) -> None:
        self.conn = conn
        self.purged = purged
        self.records: dict[str, Mapping[str, Any]] = {}
        self.found = _Scan()

    def pages(self, start: int, end: int) -> Iterator[Sequence[Any]]:
        for page in _pages(self.conn, start, end):
            self.records = _records(self.conn, page)
            yield page

    def check(self, row: Any, body: bytes, where: str) -> str | None:
        """The problem of an entry whose numbering and leaf hash are right, or None."""
        found = self.found
        if row.kind in STATE_BUILDERS:
            state = _state(row, body)
            if state is None:
                return f"{where}: body is not a state entry of its kind and record"
            found.states.append((row.idx, state))
            return None
        if row.kind == "key_rotated":  # no record: the chain is checked after the scan
            found.rotations.append((row.idx, json.loads(body)))
            return None
        builder = ENTRY_BUILDERS.get(row.kind)
        if builder is None or KIND_TABLE[row.kind] != row.record_id.partition(":")[0]:
            return f"{where}: unknown kind or wrong record table"
        record = self.records.get(row.record_id)
        if record is None:
            if row.record_id not in self.purged:
                return f"{where}: record is missing and no purge was logged"
        elif canonical_json(builder(record)) != body:
            return f"{where}: stored record does not match its log entry"
        else:
            if row.kind != "review_decided":  # every other kind creates its record
                table = KIND_TABLE[row.kind]
                found.logged[table] = found.logged.get(table, 0) + 1
            _facet_events(row.kind, record, found)
        return None


def _scan(conn: Connection, start: int, end: int, purged: frozenset[str],
          progress: Progress | None = None) -> _Scan:
    """Check entries [start, end): numbering, leaf hashes, and bodies against records.

    ``progress(entries checked, entries in all)`` is called after each page.
    """
    checks = _RecordChecks(conn, purged)
    scanned = scan_entries(checks.pages(start, end), start, end, checks.check, progress)
    checks.found.leaves = scanned.leaves
    checks.found.problem = scanned.problem
    return checks.found


def _scan_url(url: str, start: int, end: int, purged: frozenset[str]) -> _Scan:
    """:func:`_scan` in a worker process, on its own connection."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return _scan(conn, start, end, purged)
    finally:
        engine.dispose()


def _stored_nodes(conn: Connection) -> Iterator[tuple[int, int, bytes]]:
    result = conn.execute(select(t.log_nodes.c.node, t.log_nodes.c.hash)
                          .order_by(t.log_nodes.c.node))
    for part in result.partitions(20_000):
        for key, stored in part:
            level, idx = t.node_position(key)
            yield level, idx, bytes(stored)


def _stored_checkpoints(conn: Connection) -> Iterator[tuple[int, bytes, str]]:
    for row in conn.execute(select(t.checkpoints).order_by(t.checkpoints.c.size)):
        yield int(row.size), bytes(row.root), str(row.note)


def verify_log(engine: Engine, verifiers: list[Verifier], origin: str,
               workers: int | None = None, progress: Progress | None = None,
               trusted: str | None = None) -> VerifyReport:
    """Check everything; the report lists problems, the first naming the first bad entry.

    Entries are checked in ``workers`` processes (default: one per core for logs of more
    than 50,000 entries in a file or server database), each on its own range.
    ``progress(entries checked, entries in all)`` follows the entries (in one process:
    page by page; in several: at the end). ``trusted``, a checkpoint note saved earlier,
    must be extended by the log (a rollback or a rebuilt history fails).

    Everything read on the main connection comes from one snapshot (one read transaction:
    SQLite's WAL gives it, PostgreSQL runs it REPEATABLE READ), so writes committed while
    verification runs neither appear in the tables nor miss from the log it compares.
    """
    report = VerifyReport()
    tree = MemoryTree()
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ")
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
        for scanned in parts:
            tree.extend(scanned.leaves)
            if scanned.problem is not None:
                report.entries = tree.size
                report.fail(scanned.problem)
                return report
        report.entries = tree.size
        if progress is not None:
            progress(head, head)
        check_nodes(tree, _stored_nodes(conn), report)
        if not report.ok:
            return report
        verifiers = _follow_rotations(verifiers, [r for p in parts for r in p.rotations],
                                      report)
        if not report.ok:
            return report
        check_checkpoints(tree, _stored_checkpoints(conn), verifiers, origin, report)
        if report.ok and trusted is not None:
            check_trusted(tree, trusted, verifiers, origin, report)
        if report.ok:
            _check_accounts(conn, [s for p in parts for s in p.states], report)
        if report.ok:
            logged: dict[str, int] = {}
            for p in parts:
                for name, n in p.logged.items():
                    logged[name] = logged.get(name, 0) + n
            _check_unlogged(conn, logged, report)
        if report.ok:
            _check_reviews(conn, {r for p in parts for r in p.decided}, report)
        if report.ok:
            _check_facets(conn, [e for p in parts for e in p.facets], report)
        if report.ok:
            _check_payloads(conn, report)
    return report


def _follow_rotations(verifiers: list[Verifier], rotations: list[tuple[int, Any]],
                      report: VerifyReport) -> list[Verifier]:
    """The trusted keys, extended along the logged key rotations that a trusted key
    endorsed (in log order); a rotation no trusted key endorsed is a problem."""
    trusted = list(verifiers)
    for idx, entry in rotations:
        try:
            new = follow_rotation(entry, trusted)
        except NoteError as exc:
            report.fail(f"entry {idx} (key_rotated): {exc}")
            return trusted
        if new not in trusted:
            trusted.append(new)
    return trusted


def _check_payloads(conn: Connection, report: VerifyReport) -> None:
    """Each kept personal input hashes, with its salt, to its decision's commitment."""
    query = (select(t.payloads.c.decision_id, t.payloads.c.salt, t.payloads.c.payload_json,
                    t.decisions.c.input_commitment)
             .join(t.decisions, t.decisions.c.id == t.payloads.c.decision_id)
             .order_by(t.payloads.c.decision_id))
    with conn.execution_options(stream_results=True).execute(query) as rows:
        for decision_id, salt, payload, commitment in rows:
            digest = hashlib.sha256(bytes(salt) + payload.encode("utf-8")).hexdigest()
            if digest != commitment:
                report.fail(f"decision {decision_id}: its personal input does not match the "
                            "input commitment of its logged record (changed since recorded)")
                return


# Columns of a state entry's fields, where they differ; fields whose values may be shown.
_COLUMN = {"name_sha256": "name", "label_sha256": "label", "key_id": "id"}
_SHOWN = {"roles", "disabled", "created_at", "revoked_at", "principal_id"}


def _check_accounts(conn: Connection, states: list[tuple[int, dict[str, Any]]],
                    report: VerifyReport) -> None:
    """Replay the principals' and keys' state entries and compare the tables with them."""
    for kind, table, what in (("principal_recorded", t.principals, "principal"),
                              ("api_key_recorded", t.api_keys, "api key")):
        last: dict[str, tuple[int, dict[str, Any]]] = {}  # in order of first entry
        for idx, entry in states:
            if entry["kind"] == kind:
                last[entry[STATE_ID[kind]]] = (idx, entry)
        rows = {r["id"]: dict(r) for r in conn.execute(select(table)).mappings()}
        for record_id, (idx, entry) in last.items():
            row = rows.pop(record_id, None)
            if row is None:
                report.fail(f"{what} {record_id}: logged (entry {idx}) but missing from "
                            f"the {table.name} table")
                return
            name = f"{what} {record_id}" + (f" ({row['name']})" if "name" in row else "")
            logged = {k: v for k, v in entry.items() if k not in ("kind", "change", "at")}
            held = STATE_BUILDERS[kind](row)
            for key in [*logged, *(k for k in held if k not in logged)]:
                if logged.get(key) != held.get(key):
                    column = _COLUMN.get(key, key)
                    verb = "differ" if column.endswith("s") else "differs"
                    shown = (f" (log: {logged.get(key)!r}; table: {held.get(key)!r})"
                             if key in _SHOWN else "")
                    report.fail(f"{name}: {column} {verb} from the log (entry {idx}){shown}")
                    return
        for record_id, row in rows.items():
            name = f"{what} {record_id}" + (f" ({row['name']})" if "name" in row else "")
            report.fail(f"{name}: has no log entry")
            return
        if table is t.principals:
            report.principals = len(last)
        else:
            report.api_keys = len(last)


def _check_unlogged(conn: Connection, logged: dict[str, int], report: VerifyReport) -> None:
    """Each table whose rows the entries are rebuilt from holds no row without one."""
    for name in dict.fromkeys(KIND_TABLE[k] for k in ENTRY_BUILDERS):
        table = t.metadata.tables[name]
        key = table.c.key if name == "models" else table.c.id
        rows = int(conn.execute(select(func.count()).select_from(table)).scalar_one())
        if rows == logged.get(name, 0):
            continue
        entry = select(t.log_entries.c.idx).where(
            t.log_entries.c.record_id == literal(f"{name}:") + key)
        first = conn.execute(select(key).where(~entry.exists()).order_by(key).limit(1)).scalar()
        if first is not None:
            report.fail(f"record {name}:{first}: has no log entry")
        else:
            report.fail(f"{name}: {rows} rows, but the log creates {logged.get(name, 0)}")
        return


def _check_reviews(conn: Connection, decided: set[str], report: VerifyReport) -> None:
    """A review is pending exactly while no decision of it is logged."""
    for review_id, status in conn.execute(select(t.reviews.c.id, t.reviews.c.status)
                                          .order_by(t.reviews.c.requested_at)):
        if (status == "pending") == (review_id in decided):
            rule = "is decided in the log" if status == "pending" else "has no logged decision"
            report.fail(f"review {review_id}: status {status!r} but it {rule}")
            return


_FACETS = ("model_key", "decided_at", "outcome", "adverse", "anchor_hits", "reliability",
           "review_status")


def _check_facets(conn: Connection, events: list[tuple[str, str, Any]],
                  report: VerifyReport) -> None:
    """Rebuild every decision's facets from the logged records, in log order, and compare
    them with the decision_facets table row by row."""
    rebuilt: dict[str, list[Any]] = {}
    for op, decision_id, values in events:
        if op == "set":
            rebuilt[decision_id] = list(values)
        elif op == "drop":
            rebuilt.pop(decision_id, None)
        elif decision_id in rebuilt:
            for column, value in values.items():
                rebuilt[decision_id][_FACETS.index(column)] = value
    f = t.decision_facets
    count = 0
    result = conn.execute(select(f.c.decision_id, *(f.c[c] for c in _FACETS))
                          .order_by(f.c.decision_id))
    for part in result.partitions(20_000):
        for row in part:
            expected = rebuilt.pop(row.decision_id, None)
            if expected is None:
                report.fail(f"decision {row.decision_id}: facets row of no logged decision")
                return
            count += 1
            if tuple(row[1:]) == tuple(expected):
                continue
            for column, have, want in zip(_FACETS, row[1:], expected, strict=True):
                if have != want and (column != "decided_at" or rfc3339(have) != rfc3339(want)):
                    report.fail(f"decision {row.decision_id}: facet {column} is {have!r}, "
                                f"the logged records give {want!r}")
                    return
    for decision_id in rebuilt:
        report.fail(f"decision {decision_id}: its facets row is missing")
        return
    report.facets = count
