"""The Merkle audit log on the store: appends, roots, proofs, checkpoints and receipts.

Appends run inside the caller's transaction, so a record and its log entry commit
together or not at all. The log head row is locked for the append (``SELECT ... FOR
UPDATE`` on PostgreSQL; SQLite transactions begin IMMEDIATE), so appends from any number
of threads and processes get consecutive indexes with no gap and no duplicate.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update

from xai_sandbox.audit.canonical import canonical_json
from xai_sandbox.audit.merkle import (
    NodeReader,
    ProofError,
    append_nodes,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_hash,
    verify_consistency,
    verify_inclusion,
)
from xai_sandbox.audit.notes import (
    KeyStore,
    NoteError,
    Verifier,
    checkpoint_body,
    parse_checkpoint,
    sign_note,
    verify_note,
)
from xai_sandbox.errors import InvalidInputError
from xai_sandbox.store.tables import (
    checkpoints,
    log_entries,
    log_head,
    log_nodes,
    node_key,
    node_position,
)

__all__ = ["AuditLog", "Receipt", "append_entries", "check_receipt"]


def node_reader(conn: Connection) -> NodeReader:
    """Read complete-subtree hashes in one query."""
    def read(keys: Sequence[tuple[int, int]]) -> Mapping[tuple[int, int], bytes]:
        if not keys:
            return {}
        found: dict[tuple[int, int], bytes] = {}
        for start in range(0, len(keys), 500):
            part = [node_key(lv, ix) for lv, ix in keys[start : start + 500]]
            rows = conn.execute(select(log_nodes.c.node, log_nodes.c.hash)
                                .where(log_nodes.c.node.in_(part)))
            found.update({node_position(r.node): bytes(r.hash) for r in rows})
        missing = [k for k in keys if k not in found]
        if missing:
            raise ProofError("log_nodes", "stored tree is missing nodes", missing[:3])
        return found
    return read


def append_entries(conn: Connection, entries: Sequence[tuple[str, Mapping[str, Any]]]
                   ) -> list[int]:
    """Append (record id, entry) pairs inside ``conn``'s write transaction; their indexes.

    Needs no signing key, so code that holds only the store's engine (principals and
    keys) logs its changes in the transaction that makes them.
    """
    size = conn.execute(select(log_head.c.size).where(log_head.c.id == 1)
                        .with_for_update()).scalar_one()
    bodies = [canonical_json(dict(entry)) for _, entry in entries]
    hashes = [leaf_hash(b) for b in bodies]
    nodes = append_nodes(size, hashes, node_reader(conn))
    now = datetime.now(UTC)
    conn.execute(insert(log_entries), [
        {"idx": size + i, "kind": entry["kind"], "record_id": record_id, "body": body,
         "leaf_hash": h, "appended_at": now}
        for i, ((record_id, entry), body, h) in enumerate(zip(entries, bodies, hashes,
                                                              strict=True))])
    conn.execute(insert(log_nodes), [{"node": node_key(lv, ix), "hash": h}
                                     for (lv, ix), h in nodes.items()])
    conn.execute(update(log_head).where(log_head.c.id == 1)
                 .values(size=size + len(entries)))
    return list(range(size, size + len(entries)))


@dataclass(frozen=True)
class Receipt:
    """Proof that an entry is in the log, checkable offline with the log's public key."""

    origin: str
    leaf_index: int
    leaf_hash: bytes
    entry: bytes
    inclusion_proof: tuple[bytes, ...]
    checkpoint: str
    key_id: str

    def to_dict(self) -> dict[str, Any]:
        def b64(data: bytes) -> str:
            return base64.b64encode(data).decode()

        return {"origin": self.origin, "leaf_index": self.leaf_index,
                "leaf_hash": b64(self.leaf_hash), "entry": self.entry.decode(),
                "inclusion_proof": [b64(p) for p in self.inclusion_proof],
                "checkpoint": self.checkpoint, "key_id": self.key_id}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: Any) -> Receipt:
        if not isinstance(data, Mapping):
            raise InvalidInputError("receipt", "must be a JSON object", type(data).__name__)
        fields = ("origin", "leaf_index", "leaf_hash", "entry", "inclusion_proof",
                  "checkpoint", "key_id")
        missing = [f for f in fields if f not in data]
        if missing:
            raise InvalidInputError("receipt", f"is missing fields {missing}", sorted(data))
        try:
            proof = tuple(base64.b64decode(p, validate=True) for p in data["inclusion_proof"])
            leaf = base64.b64decode(data["leaf_hash"], validate=True)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError("receipt", "hashes must be base64 strings",
                                    data.get("leaf_hash")) from exc
        if not isinstance(data["entry"], str) or not isinstance(data["checkpoint"], str):
            raise InvalidInputError("receipt", "entry and checkpoint must be strings",
                                    type(data["entry"]).__name__)
        if not isinstance(data["leaf_index"], int) or isinstance(data["leaf_index"], bool):
            raise InvalidInputError("receipt.leaf_index", "must be an integer",
                                    data["leaf_index"])
        return cls(origin=str(data["origin"]), leaf_index=data["leaf_index"], leaf_hash=leaf,
                   entry=data["entry"].encode(), inclusion_proof=proof,
                   checkpoint=data["checkpoint"], key_id=str(data["key_id"]))

    @classmethod
    def from_json(cls, text: str | bytes) -> Receipt:
        try:
            return cls.from_dict(json.loads(text))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidInputError("receipt", "must be valid JSON", str(exc)) from exc


def check_receipt(receipt: Receipt, verifiers: list[Verifier]) -> dict[str, Any]:
    """Verify a receipt with no database: the checkpoint's signature, the leaf's hash of
    the entry, and the inclusion proof against the signed root. Returns the entry.

    Raises :class:`~xai_sandbox.audit.notes.NoteError` or
    :class:`~xai_sandbox.audit.merkle.ProofError`.
    """
    body, _ = verify_note(receipt.checkpoint, verifiers)
    cp = parse_checkpoint(body)
    if cp.origin != receipt.origin:
        raise NoteError("receipt.origin", f"must match the checkpoint's origin {cp.origin!r}",
                        receipt.origin)
    if leaf_hash(receipt.entry) != receipt.leaf_hash:
        raise ProofError("receipt.leaf_hash", "must be SHA-256(0x00 || entry)",
                         receipt.leaf_hash.hex())
    verify_inclusion(receipt.leaf_index, cp.size, receipt.leaf_hash,
                     list(receipt.inclusion_proof), cp.root)
    entry: dict[str, Any] = json.loads(receipt.entry)
    return entry


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

    # ------------------------------------------------------------------ reads
    def size(self, conn: Connection | None = None) -> int:
        if conn is None:
            with self.engine.connect() as c:
                return self.size(c)
        return int(conn.execute(select(log_head.c.size).where(log_head.c.id == 1))
                   .scalar_one())

    def root(self, size: int | None = None) -> bytes:
        with self.engine.connect() as conn:
            n = self.size(conn) if size is None else size
            return root_hash(n, node_reader(conn))

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        with self.engine.connect() as conn:
            self._check_size(conn, size)
            return inclusion_proof(index, size, node_reader(conn))

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        with self.engine.connect() as conn:
            self._check_size(conn, new_size)
            return consistency_proof(old_size, new_size, node_reader(conn))

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
            size = conn.execute(select(log_head.c.size).where(log_head.c.id == 1)
                                .with_for_update()).scalar_one()
            read = node_reader(conn)
            root = root_hash(size, read)
            prev = conn.execute(select(checkpoints).order_by(checkpoints.c.size.desc())
                                .limit(1)).first()
            if prev is not None:
                if prev.size == size:
                    if bytes(prev.root) != root:
                        raise ProofError("log", "root changed without the log growing",
                                         size)
                    return size, str(prev.note)
                verify_note(prev.note, self.keys.verifiers())
                verify_consistency(prev.size, size, bytes(prev.root), root,
                                   consistency_proof(prev.size, size, read))
            note = sign_note(checkpoint_body(self.origin, size, root), signer)
            conn.execute(insert(checkpoints).values(
                size=size, root=root, note=note, key_id=signer.verifier.key_id,
                signed_at=datetime.now(UTC)))
        return size, note

    def latest_checkpoint(self) -> tuple[int, str] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(checkpoints.c.size, checkpoints.c.note)
                               .order_by(checkpoints.c.size.desc()).limit(1)).first()
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
            row = conn.execute(select(log_entries.c.body, log_entries.c.leaf_hash)
                               .where(log_entries.c.idx == index)).first()
            if row is None:
                raise InvalidInputError("index", "must be an entry of the log", index)
            proof = inclusion_proof(index, size, node_reader(conn))
        _, verifier = verify_note(note, self.keys.verifiers())
        return Receipt(origin=self.origin, leaf_index=index, leaf_hash=bytes(row.leaf_hash),
                       entry=bytes(row.body), inclusion_proof=tuple(proof), checkpoint=note,
                       key_id=verifier.key_id)
