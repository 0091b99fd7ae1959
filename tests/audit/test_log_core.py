"""The audit core with no database: appends, checkpoints, receipts and verification over
an in-memory node store and plain entries."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from xai_sandbox.audit import log
from xai_sandbox.audit.canonical import canonical_json
from xai_sandbox.audit.merkle import MemoryTree, NodeStore, ProofError, leaf_hash, root_hash
from xai_sandbox.audit.notes import NoteError, Signer
from xai_sandbox.audit.verify import (
    EntryCheck,
    Progress,
    VerifyReport,
    check_checkpoints,
    check_nodes,
    scan_entries,
)

ORIGIN = "test.example/log"


class DictNodes:
    """The smallest node store: a dict."""

    def __init__(self) -> None:
        self.nodes: dict[tuple[int, int], bytes] = {}

    def read(self, keys: Sequence[tuple[int, int]]) -> Mapping[tuple[int, int], bytes]:
        missing = [k for k in keys if k not in self.nodes]
        if missing:
            raise ProofError("nodes", "missing", missing)
        return {k: self.nodes[k] for k in keys}

    def write(self, nodes: Mapping[tuple[int, int], bytes]) -> None:
        assert not set(nodes) & set(self.nodes)
        self.nodes.update(nodes)


def _signer() -> Signer:
    return Signer("test.example", Ed25519PrivateKey.generate())


def _pairs(n: int, first: int = 0) -> list[tuple[str, dict[str, object]]]:
    return [(f"things:{i}", {"kind": "thing", "n": i}) for i in range(first, first + n)]


def test_append_numbers_entries_writes_their_nodes_and_matches_a_memory_tree() -> None:
    store = DictNodes()
    nodes: NodeStore = store
    added = log.append(0, _pairs(5), nodes)
    added += log.append(5, _pairs(6, 5), nodes)
    assert [e.idx for e in added] == list(range(11))
    assert [e.record_id for e in added] == [f"things:{i}" for i in range(11)]
    assert all(e.kind == "thing" for e in added)
    assert all(e.body == canonical_json({"kind": "thing", "n": e.idx}) for e in added)
    assert all(e.leaf_hash == leaf_hash(e.body) for e in added)
    reference = MemoryTree()
    reference.extend([e.leaf_hash for e in added])
    assert store.nodes == reference.nodes
    assert root_hash(11, store.read) == reference.root()
    with pytest.raises(AssertionError):  # an append never rewrites a stored node
        log.append(5, _pairs(1), nodes)


def _log(n: int) -> tuple[MemoryTree, list[log.LogEntry]]:
    """The entries appended to a log of ``n`` and the tree recomputed from them."""
    entries = log.append(0, _pairs(n), DictNodes())
    tree = MemoryTree()
    tree.extend([e.leaf_hash for e in entries])
    return tree, entries


def test_checkpoints_are_signed_once_per_size_and_proven_consistent() -> None:
    signer = _signer()
    verifiers = [signer.verifier]
    tree, entries = _log(7)
    root, note, signed = log.next_checkpoint(ORIGIN, 4, tree.read, signer, verifiers, None)
    assert signed
    assert root == tree.root(4)
    same = log.next_checkpoint(ORIGIN, 4, tree.read, signer, verifiers, (4, root, note))
    assert same == (root, note, False)
    root7, note7, signed7 = log.next_checkpoint(ORIGIN, 7, tree.read, signer, verifiers,
                                                (4, root, note))
    assert signed7
    assert root7 == tree.root()
    with pytest.raises(ProofError, match="root changed"):
        log.next_checkpoint(ORIGIN, 4, tree.read, signer, verifiers, (4, b"\x00" * 32, note))
    with pytest.raises(ProofError):
        log.next_checkpoint(ORIGIN, 7, tree.read, signer, verifiers, (4, b"\x00" * 32, note))
    with pytest.raises(NoteError):
        log.next_checkpoint(ORIGIN, 7, tree.read, signer, [_signer().verifier],
                            (4, root, note))

    receipt = log.make_receipt(ORIGIN, 5, entries[5].body, entries[5].leaf_hash, 7, note7,
                               tree.read, verifiers)
    assert log.check_receipt(log.Receipt.from_json(receipt.to_json()), verifiers) == {
        "kind": "thing", "n": 5}


def _scan(entries: list[log.LogEntry], end: int | None = None, check: EntryCheck | None = None,
          progress: Progress | None = None) -> tuple[list[bytes], str | None]:
    pages = [entries[i:i + 3] for i in range(0, len(entries), 3)]
    found = scan_entries(pages, 0, len(entries) if end is None else end, check, progress)
    return found.leaves, found.problem


def test_scan_entries_names_the_first_bad_entry() -> None:
    _, entries = _log(8)
    seen: list[tuple[int, int]] = []
    leaves, problem = _scan(entries, progress=lambda done, total: seen.append((done, total)))
    assert problem is None
    assert leaves == [e.leaf_hash for e in entries]
    assert seen == [(3, 8), (6, 8), (8, 8)]

    gap = entries[:4] + entries[5:]
    assert _scan(gap, end=8) == (
        [e.leaf_hash for e in entries[:4]], "entry 4: missing (next stored entry is 5)")
    bad = list(entries)
    bad[2] = dataclasses.replace(bad[2], body=b'{"kind":"thing","n":99}')
    assert _scan(bad)[1] == "entry 2 (thing things:2): leaf hash is not SHA-256(0x00 || body)"
    assert _scan(entries, end=9)[1] == "entry 8: missing (the log head counts 9 or more)"

    def check(entry: log.Entry, body: bytes, where: str) -> str | None:
        return f"{where}: refused" if entry.idx == 6 else None

    leaves, problem = _scan(entries, check=check)
    assert problem == "entry 6 (thing things:6): refused"
    assert len(leaves) == 6


def test_stored_nodes_and_checkpoints_are_checked_against_the_recomputed_tree() -> None:
    signer = _signer()
    tree, _ = _log(6)
    stored = sorted((lv, ix, h) for (lv, ix), h in tree.nodes.items())
    report = VerifyReport()
    check_nodes(tree, stored, report)
    assert report.ok
    assert report.nodes == len(tree.nodes)

    report = VerifyReport()
    check_nodes(tree, stored[:-1], report)
    assert report.problems == ["log_nodes: 1 nodes missing"]
    level, idx, _ = stored[0]
    report = VerifyReport()
    check_nodes(tree, [(level, idx, hashlib.sha256(b"x").digest()), *stored[1:]], report)
    assert report.problems == [f"node ({level}, {idx}) over entries from {idx << level}: "
                               "does not match the tree recomputed from the entries"]

    cps = []
    previous = None
    for size in (2, 6):
        root, note, _ = log.next_checkpoint(ORIGIN, size, tree.read, signer,
                                            [signer.verifier], previous)
        cps.append((size, root, note))
        previous = (size, root, note)
    report = VerifyReport()
    check_checkpoints(tree, cps, [signer.verifier], ORIGIN, report)
    assert report.ok
    assert report.checkpoints == 2

    report = VerifyReport()
    check_checkpoints(tree, cps, [signer.verifier], "another/log", report)
    assert report.problems == [
        "checkpoint at size 2: signed body does not match the stored checkpoint"]
    report = VerifyReport()
    check_checkpoints(tree, cps, [_signer().verifier], ORIGIN, report)
    assert report.problems[0].startswith("checkpoint at size 2: ")
    short = MemoryTree()
    short.extend([leaf_hash(b"other") for _ in range(6)])
    report = VerifyReport()
    check_checkpoints(short, cps, [signer.verifier], ORIGIN, report)
    assert report.problems == ["checkpoint at size 2: signed root is not the root of the "
                               "stored entries 0..1"]
