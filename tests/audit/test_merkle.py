"""RFC 9162 Merkle proofs: conformance vectors and properties against a literal reference."""

import base64
import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xai_sandbox.audit.merkle import (
    EMPTY_ROOT,
    MemoryTree,
    ProofError,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)

# transparency-dev/merkle's vectors (Apache-2.0), copied from shared/testdata/merkle/.
VECTORS = Path(__file__).resolve().parents[1] / "data" / "merkle" / "testdata"


def _cases(kind: str) -> list[Path]:
    found = sorted((VECTORS / kind).rglob("*.json"))
    assert found, f"no conformance vectors under {VECTORS / kind}"
    return found


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value) if value else b""


@pytest.mark.parametrize("path", _cases("inclusion"), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_inclusion_vectors(path: Path) -> None:
    case = json.loads(path.read_text())
    args = (case["leafIdx"], case["treeSize"], _b64(case["leafHash"]),
            [_b64(p) for p in case["proof"] or []], _b64(case["root"]))
    if case["wantErr"]:
        with pytest.raises(ProofError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize("path", _cases("consistency"),
                         ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_consistency_vectors(path: Path) -> None:
    case = json.loads(path.read_text())
    args = (case["size1"], case["size2"], _b64(case["root1"]), _b64(case["root2"]),
            [_b64(p) for p in case["proof"] or []])
    if case["wantErr"]:
        with pytest.raises(ProofError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


# ---------------------------------------------------------------- the RFC, literally
def mth(d: list[bytes]) -> bytes:
    n = len(d)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = 1 << ((n - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + mth(d[:k]) + mth(d[k:])).digest()


def path(m: int, d: list[bytes]) -> list[bytes]:
    n = len(d)
    if n <= 1:
        return []
    k = 1 << ((n - 1).bit_length() - 1)
    if m < k:
        return [*path(m, d[:k]), mth(d[k:])]
    return [*path(m - k, d[k:]), mth(d[:k])]


def subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [mth(d)]
    k = 1 << ((n - 1).bit_length() - 1)
    if m <= k:
        return [*subproof(m, d[:k], b), mth(d[k:])]
    return [*subproof(m - k, d[k:], False), mth(d[:k])]


def _tree(entries: list[bytes]) -> MemoryTree:
    tree = MemoryTree()
    for e in entries:
        tree.append(e)
    return tree


entries_strategy = st.lists(st.binary(max_size=8), min_size=1, max_size=70)


@settings(max_examples=150, deadline=None)
@given(entries=entries_strategy, data=st.data())
def test_inclusion_proofs_match_the_rfc(entries: list[bytes], data: st.DataObject) -> None:
    tree = _tree(entries)
    size = data.draw(st.integers(1, len(entries)))
    index = data.draw(st.integers(0, size - 1))
    assert tree.root(size) == mth(entries[:size])
    proof = tree.inclusion_proof(index, size)
    assert proof == path(index, entries[:size])
    verify_inclusion(index, size, leaf_hash(entries[index]), proof, mth(entries[:size]))


@settings(max_examples=150, deadline=None)
@given(entries=entries_strategy, data=st.data())
def test_consistency_proofs_match_the_rfc(entries: list[bytes], data: st.DataObject) -> None:
    tree = _tree(entries)
    size2 = data.draw(st.integers(1, len(entries)))
    size1 = data.draw(st.integers(1, size2))
    proof = tree.consistency_proof(size1, size2)
    assert proof == (subproof(size1, entries[:size2], True) if size1 < size2 else [])
    verify_consistency(size1, size2, mth(entries[:size1]), mth(entries[:size2]), proof)


@settings(max_examples=100, deadline=None)
@given(entries=st.lists(st.binary(max_size=8), min_size=2, max_size=40), data=st.data())
def test_any_flipped_bit_is_rejected(entries: list[bytes], data: st.DataObject) -> None:
    tree = _tree(entries)
    index = data.draw(st.integers(0, len(entries) - 1))
    proof = tree.inclusion_proof(index)
    which = data.draw(st.integers(0, len(proof) - 1))
    bit = data.draw(st.integers(0, 255))
    bad = bytearray(proof[which])
    bad[bit // 8] ^= 1 << (bit % 8)
    proof[which] = bytes(bad)
    with pytest.raises(ProofError):
        verify_inclusion(index, len(entries), leaf_hash(entries[index]), proof, tree.root())


def test_empty_tree_and_hash_prefixes() -> None:
    assert MemoryTree().root() == EMPTY_ROOT
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    assert node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32
                                                             ).digest()


@pytest.mark.parametrize(("args", "message"), [
    ((0, 1, b"short", [], b"x" * 32), "leaf_hash: must be 32 bytes"),
    ((0, 1, b"x" * 32, "proof", b"x" * 32), "proof: must be a list"),
    ((-1, 1, b"x" * 32, [], b"x" * 32), "index: must be an integer >= 0"),
    ((2, 2, b"x" * 32, [b"y" * 32], b"x" * 32), "index: must be < tree size 2"),
    ((0, 1, b"x" * 32, [None], b"x" * 32), r"proof\[0\]: must be 32 bytes"),
])
def test_malformed_inclusion_input_is_a_clear_error(args, message) -> None:
    with pytest.raises(ProofError, match=message):
        verify_inclusion(*args)
