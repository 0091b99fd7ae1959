"""The Merkle log's own rules, over any place that keeps it: entries, appends,
checkpoints and receipts.

An entry is a record id, a kind and the canonical JSON of its body; its leaf is
SHA-256(0x00 || body). :func:`append` turns (record id, entry) pairs into the entries and
the tree nodes they add, reading and writing nodes through a
:class:`~xai_sandbox.audit.merkle.NodeStore`; the caller keeps the entries and the log's
size (the store does both inside the transaction of the records they log).
:func:`next_checkpoint` signs a checkpoint once the tree is proven consistent with the
previous one; a :class:`Receipt` proves one entry offline.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from xai_sandbox.audit.canonical import canonical_json
from xai_sandbox.audit.merkle import (
    NodeReader,
    NodeStore,
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
    NoteError,
    Signer,
    Verifier,
    checkpoint_body,
    parse_checkpoint,
    sign_note,
    verify_note,
)
from xai_sandbox.errors import InvalidInputError

__all__ = ["Entry", "LogEntry", "Receipt", "append", "check_receipt", "make_receipt",
           "next_checkpoint"]


class Entry(Protocol):
    """An entry as a log keeps it (a database row has these fields)."""

    @property
    def idx(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def record_id(self) -> str: ...
    @property
    def body(self) -> bytes: ...
    @property
    def leaf_hash(self) -> bytes: ...


@dataclass(frozen=True)
class LogEntry:
    """A new entry: its index, kind, record ('table:id'), canonical body and leaf hash."""

    idx: int
    kind: str
    record_id: str
    body: bytes
    leaf_hash: bytes


def append(size: int, entries: Iterable[tuple[str, Mapping[str, Any]]], nodes: NodeStore
           ) -> list[LogEntry]:
    """Append (record id, entry) pairs to a log of ``size`` entries: the new entries,
    numbered from ``size``, once the tree nodes they complete are written to ``nodes``."""
    pairs = list(entries)
    bodies = [canonical_json(dict(entry)) for _, entry in pairs]
    hashes = [leaf_hash(b) for b in bodies]
    nodes.write(append_nodes(size, hashes, nodes.read))
    return [LogEntry(size + i, str(entry["kind"]), record_id, body, h)
            for i, ((record_id, entry), body, h) in enumerate(zip(pairs, bodies, hashes,
                                                                  strict=True))]


def next_checkpoint(origin: str, size: int, read: NodeReader, signer: Signer,
                    verifiers: list[Verifier], previous: tuple[int, bytes, str] | None
                    ) -> tuple[bytes, str, bool]:
    """The root of the first ``size`` entries, a signed checkpoint note of it and whether
    that note is new: signed after proving the tree consistent with the ``previous``
    checkpoint (size, root, note), or ``previous``'s own note when it is of ``size``."""
    root = root_hash(size, read)
    if previous is not None:
        prev_size, prev_root, prev_note = previous
        if prev_size == size:
            if prev_root != root:
                raise ProofError("log", "root changed without the log growing", size)
            return root, prev_note, False
        verify_note(prev_note, verifiers)
        verify_consistency(prev_size, size, prev_root, root,
                           consistency_proof(prev_size, size, read))
    return root, sign_note(checkpoint_body(origin, size, root), signer), True


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


def make_receipt(origin: str, index: int, entry: bytes, leaf: bytes, size: int, note: str,
                 read: NodeReader, verifiers: list[Verifier]) -> Receipt:
    """The receipt of entry ``index`` (its body and leaf hash) under the checkpoint
    ``note`` of the log's first ``size`` entries."""
    proof = inclusion_proof(index, size, read)
    _, verifier = verify_note(note, verifiers)
    return Receipt(origin=origin, leaf_index=index, leaf_hash=leaf, entry=entry,
                   inclusion_proof=tuple(proof), checkpoint=note, key_id=verifier.key_id)
