"""The Merkle audit log kept in the store's tables: appends, roots, proofs, checkpoints
and receipts, by the rules of :mod:`xai_sandbox.audit.log`.

Appends run inside the caller's transaction, so a record and its log entry commit
together or not at all. The log head row is locked for the append (``SELECT ... FOR
UPDATE`` on PostgreSQL; SQLite transactions begin IMMEDIATE), so appends from any number
of threads and processes get consecutive indexes with no gap and no duplicate.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update

import xai_sandbox.store.tables as t
from xai_sandbox.audit import log
from xai_sandbox.audit.log import Receipt
from xai_sandbox.audit.merkle import ProofError, consistency_proof, inclusion_proof, root_hash
from xai_sandbox.audit.notes import KeyStore, Signer, Verifier, rotation_entry
from xai_sandbox.errors import InvalidInputError

__all__ = ["AuditLog", "SqlNodes", "append_entries"]


class SqlNodes:
    """The tree's nodes in the ``log_nodes`` table, read and written on ``conn``: a
    :class:`~xai_sandbox.audit.merkle.NodeStore`."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def read(self, keys: Sequence[tuple[int, int]]) -> Mapping[tuple[int, int], bytes]:
        """Complete-subtree hashes, 500 to a query."""
        if not keys:
            return {}
        found: dict[tuple[int, int], bytes] = {}
        for start in range(0, len(keys), 500):
            part = [t.node_key(lv, ix) for lv, ix in keys[start : start + 500]]
            rows = self.conn.execute(select(t.log_nodes.c.node, t.log_nodes.c.hash)
                                     .where(t.log_nodes.c.node.in_(part)))
            found.update({t.node_position(r.node): bytes(r.hash) for r in rows})
        missing = [k for k in keys if k not in found]
        if missing:
            raise ProofError("log_nodes", "stored tree is missing nodes", missing[:3])
        return found

    def write(self, nodes: Mapping[tuple[int, int], bytes]) -> None:
        self.conn.execute(insert(t.log_nodes), [{"node": t.node_key(lv, ix), "hash": h}
                                                for (lv, ix), h in nodes.items()])


def _locked_size(conn: Connection) -> int:
    return int(conn.execute(select(t.log_head.c.size).where(t.log_head.c.id == 1)
                            .with_for_update()).scalar_one())


def append_entries(conn: Connection, entries: Sequence[tuple[str, Mapping[str, Any]]]
                   ) -> list[int]:
    """Append (record id, entry) pairs inside ``conn``'s write transaction; their indexes.

    Needs no signing key, so code that holds only the store's engine (principals and
    keys) logs its changes in the transaction that makes them.
    """
    size = _locked_size(conn)
    added = log.append(size, entries, SqlNodes(conn))
    now = datetime.now(UTC)
    conn.execute(insert(t.log_entries), [
        {"idx": e.idx, "kind": e.kind, "record_id": e.record_id, "body": e.body,
         "leaf_hash": e.leaf_hash, "appended_at": now} for e in added])
    conn.execute(update(t.log_head).where(t.log_head.c.id == 1)
                 .values(size=size + len(entries)))
    return [e.idx for e in added]


class AuditLog:
    """The log of one store: ``origin`` names it in checkpoints."""

    def __init__(self, engine: Engine, keys: KeyStore, origin: str,
                 writer: Engine | None = None) -> None:
        self.engine = engine
        self.writer = writer or engine
        self.keys = keys
        self.origin = origin
        self._signing = threading.Lock()

    # ------------------------------------------------------------------ appends
    def append(self, conn: Connection, entries: Sequence[tuple[str, Mapping[str, Any]]]
               ) -> list[int]:
        """Append (record id, entry) pairs inside ``conn``'s transaction; their indexes."""
        return append_entries(conn, entries)

    def rotate_key(self) -> Signer:
        """Sign with a new key from now on. The rotation is itself an entry of the log,
        endorsed by the previous key, and the next checkpoint is signed with the new key:
        a verifier that pins the old key follows the chain to the new one."""
        with self._signing:
            previous = self.keys.signer()
            signer = self.keys.rotate()
            with self.writer.begin() as conn:
                append_entries(conn, [(f"keys:{signer.verifier.key_id}",
                                       rotation_entry(previous, signer.verifier))])
        self.checkpoint()
        return signer

    # ------------------------------------------------------------------ reads
    def size(self, conn: Connection | None = None) -> int:
        if conn is None:
            with self.engine.connect() as c:
                return self.size(c)
        return int(conn.execute(select(t.log_head.c.size).where(t.log_head.c.id == 1))
                   .scalar_one())

    def root(self, size: int | None = None) -> bytes:
        with self.engine.connect() as conn:
            n = self.size(conn) if size is None else size
            return root_hash(n, SqlNodes(conn).read)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        with self.engine.connect() as conn:
            self._check_size(conn, size)
            return inclusion_proof(index, size, SqlNodes(conn).read)

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        with self.engine.connect() as conn:
            self._check_size(conn, new_size)
            return consistency_proof(old_size, new_size, SqlNodes(conn).read)

    def _check_size(self, conn: Connection, size: int) -> None:
        current = self.size(conn)
        if not isinstance(size, int) or not 0 <= size <= current:
            raise ProofError("size", f"must be between 0 and the log size {current}", size)

    def verifiers(self) -> list[Verifier]:
        return self.keys.verifiers()

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self) -> tuple[int, str]:
        """Sign a checkpoint of the current tree, after proving it consistent with the
        previous checkpoint. Returns (size, signed note)."""
        signer = self.keys.signer()
        with self.writer.begin() as conn:
            size = _locked_size(conn)
            prev = conn.execute(select(t.checkpoints).order_by(t.checkpoints.c.size.desc())
                                .limit(1)).first()
            previous = (None if prev is None
                        else (int(prev.size), bytes(prev.root), str(prev.note)))
            root, note, signed = log.next_checkpoint(
                self.origin, size, SqlNodes(conn).read, signer, self.keys.verifiers(), previous)
            if not signed:  # the previous checkpoint is of this size
                return size, note
            conn.execute(insert(t.checkpoints).values(
                size=size, root=root, note=note, key_id=signer.verifier.key_id,
                signed_at=datetime.now(UTC)))
        return size, note

    def latest_checkpoint(self) -> tuple[int, str] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.checkpoints.c.size, t.checkpoints.c.note)
                               .order_by(t.checkpoints.c.size.desc()).limit(1)).first()
        return (int(row.size), str(row.note)) if row is not None else None

    def receipt(self, index: int) -> Receipt:
        """A receipt for entry ``index`` under the newest checkpoint (signing one if the
        newest does not cover the entry yet)."""
        latest = self.latest_checkpoint()
        if latest is None or latest[0] <= index:
            # Concurrent callers share one signing: whoever waited finds the checkpoint the
            # first one signed (it covers every entry appended before it) and uses it.
            with self._signing:
                latest = self.latest_checkpoint()
                if latest is None or latest[0] <= index:
                    latest = self.checkpoint()
        size, note = latest
        with self.engine.connect() as conn:
            row = conn.execute(select(t.log_entries.c.body, t.log_entries.c.leaf_hash)
                               .where(t.log_entries.c.idx == index)).first()
            if row is None:
                raise InvalidInputError("index", "must be an entry of the log", index)
            return log.make_receipt(self.origin, index, bytes(row.body), bytes(row.leaf_hash),
                                    size, note, SqlNodes(conn).read, self.keys.verifiers())
