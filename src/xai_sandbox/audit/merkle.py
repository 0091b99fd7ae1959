"""RFC 9162 Merkle tree hashing, proofs and their verification.

Hashes: leaf = SHA-256(0x00 || data), node = SHA-256(0x01 || left || right), the empty
tree's root SHA-256(""). Proofs are lists of 32-byte hashes in RFC 9162 order.

Proof generation reads complete-subtree hashes through a ``NodeReader``: node (level, i)
is the root of leaves [i * 2^level, (i + 1) * 2^level), which exists once the tree has
grown past its last leaf. Any other range is split at the largest power of two below its
size, so a proof or a root costs O(log n) node reads. A :class:`NodeStore` keeps the
nodes (:class:`MemoryTree` in a dict; the store in its database). The verifiers follow
RFC 9162 sections 2.1.3.2 and 2.1.4.2 literally and raise :class:`ProofError` on any
mismatch or malformed input.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from xai_sandbox.errors import InvalidInputError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MemoryTree",
    "NodeReader",
    "NodeStore",
    "ProofError",
    "append_nodes",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "nodes_for",
    "root_hash",
    "subtree_nodes",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

# (level, index) -> hash, for complete subtrees only.
NodeReader = Callable[[Sequence[tuple[int, int]]], Mapping[tuple[int, int], bytes]]


class NodeStore(Protocol):
    """Where a tree's complete-subtree hashes are kept, keyed (level, index)."""

    def read(self, keys: Sequence[tuple[int, int]]) -> Mapping[tuple[int, int], bytes]:
        """The hashes of ``keys``; raises :class:`ProofError` if one is not stored."""
        ...

    def write(self, nodes: Mapping[tuple[int, int], bytes]) -> None:
        """Store new nodes (never one already stored)."""
        ...


class ProofError(InvalidInputError):
    """A proof, root or size does not verify, or is malformed."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def subtree_nodes(start: int, end: int) -> list[tuple[int, int]]:
    """The complete subtrees whose hashes make up MTH(D[start:end]), left to right.

    ``start`` must be aligned as it is in every range RFC 9162 proofs use.
    """
    out: list[tuple[int, int]] = []
    while start < end:
        size = end - start
        if size & (size - 1) == 0 and start % size == 0:
            level = size.bit_length() - 1
            out.append((level, start >> level))
            break
        k = _split(size)
        level = k.bit_length() - 1
        out.append((level, start >> level))
        start += k
    return out


def _fold(hashes: list[bytes]) -> bytes:
    """Combine the complete subtrees of a range: right to left, as the RFC's recursion does."""
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


def _ranges_inclusion(index: int, size: int) -> list[tuple[int, int]]:
    """The ranges whose roots form PATH(index, D[0:size]), in proof order."""
    out: list[tuple[int, int]] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo += k
    return list(reversed(out))


def _ranges_consistency(m: int, size: int) -> list[tuple[int, int]]:
    """The ranges whose roots form PROOF(m, D[0:size]) (RFC 9162 SUBPROOF), in order."""
    out: list[tuple[int, int]] = []
    lo, hi, complete = 0, size, True
    while True:
        n = hi - lo
        if m == n:
            if not complete:
                out.append((lo, hi))
            break
        k = _split(n)
        if m <= k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo += k
            m -= k
            complete = False
    return list(reversed(out))


def nodes_for(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Every complete-subtree node needed to hash the given ranges."""
    seen: dict[tuple[int, int], None] = {}
    for start, end in ranges:
        for node in subtree_nodes(start, end):
            seen[node] = None
    return list(seen)


def _hash_ranges(ranges: list[tuple[int, int]], read: NodeReader) -> list[bytes]:
    nodes = read(nodes_for(ranges))
    return [_fold([nodes[n] for n in subtree_nodes(s, e)]) for s, e in ranges]


def _check_size(name: str, value: object, minimum: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ProofError(name, f"must be an integer >= {minimum}", value)
    return value


def root_hash(size: int, read: NodeReader) -> bytes:
    """MTH of the first ``size`` leaves."""
    _check_size("size", size)
    if size == 0:
        return EMPTY_ROOT
    return _hash_ranges([(0, size)], read)[0]


def inclusion_proof(index: int, size: int, read: NodeReader) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree of ``size`` leaves."""
    _check_size("size", size, 1)
    _check_size("index", index)
    if index >= size:
        raise ProofError("index", f"must be < size {size}", index)
    return _hash_ranges(_ranges_inclusion(index, size), read)


def consistency_proof(old_size: int, new_size: int, read: NodeReader) -> list[bytes]:
    """The proof that the tree of ``old_size`` leaves is a prefix of the one of ``new_size``."""
    _check_size("old_size", old_size)
    _check_size("new_size", new_size)
    if old_size > new_size:
        raise ProofError("old_size", f"must be <= new_size {new_size}", old_size)
    if old_size == 0 or old_size == new_size:
        return []
    return _hash_ranges(_ranges_consistency(old_size, new_size), read)


def _check_hash(name: str, value: object) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != HASH_SIZE:
        raise ProofError(name, f"must be {HASH_SIZE} bytes", value)
    return bytes(value)


def _check_proof(proof: object) -> list[bytes]:
    if isinstance(proof, bytes | str) or not isinstance(proof, Sequence):
        raise ProofError("proof", "must be a list of 32-byte hashes", type(proof).__name__)
    return [_check_hash(f"proof[{i}]", p) for i, p in enumerate(proof)]


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes],
                     root: bytes) -> None:
    """RFC 9162 2.1.3.2; raises :class:`ProofError` unless the proof is valid."""
    _check_size("index", index)
    _check_size("size", size)
    leaf, root = _check_hash("leaf_hash", leaf), _check_hash("root", root)
    path = _check_proof(proof)
    if index >= size:
        raise ProofError("index", f"must be < tree size {size}", index)
    fn, sn = index, size - 1
    r = leaf
    for p in path:
        if sn == 0:
            raise ProofError("proof", "is longer than the tree is deep", len(path))
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("proof", "is shorter than the tree is deep", len(path))
    if r != root:
        raise ProofError("root", "does not match the root computed from the proof",
                         root.hex())


def verify_consistency(size1: int, size2: int, root1: bytes, root2: bytes,
                       proof: Sequence[bytes]) -> None:
    """RFC 9162 2.1.4.2; raises :class:`ProofError` unless the proof is valid."""
    _check_size("size1", size1)
    _check_size("size2", size2)
    if size1 > size2:
        raise ProofError("size1", f"must be <= size2 {size2}", size1)
    if size1 == 0:
        raise ProofError("size1", "must be > 0: a proof from the empty tree is meaningless",
                         size1)
    if size1 == size2:
        # As in the conformance vectors: equal trees need equal roots and no proof.
        if isinstance(proof, bytes | str) or not isinstance(proof, Sequence) or proof:
            raise ProofError("proof", "must be empty for equal sizes", proof)
        if not isinstance(root1, bytes | bytearray) or bytes(root1) != root2:
            raise ProofError("root2", "must equal root1 for equal sizes", root2)
        return
    root1, root2 = _check_hash("root1", root1), _check_hash("root2", root2)
    path = _check_proof(proof)
    if not path:
        raise ProofError("proof", "must not be empty", 0)
    if size1 & (size1 - 1) == 0:  # size1 is a power of two: root1 starts the path
        path = [root1, *path]
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("proof", "is longer than needed", len(path))
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("proof", "is shorter than needed", len(path))
    if fr != root1:
        raise ProofError("root1", "does not match the old root computed from the proof",
                         root1.hex())
    if sr != root2:
        raise ProofError("root2", "does not match the new root computed from the proof",
                         root2.hex())


def append_nodes(size: int, leaves: Sequence[bytes], read: NodeReader
                 ) -> dict[tuple[int, int], bytes]:
    """The complete-subtree nodes created by appending ``leaves`` to a tree of ``size``.

    The only existing nodes a new node can need are the tree's right-edge subtrees
    (its binary decomposition), read once for the whole batch.
    """
    cache = dict(read(subtree_nodes(0, size))) if size else {}
    new: dict[tuple[int, int], bytes] = {}
    for offset, h in enumerate(leaves):
        j, level = size + offset, 0
        cache[(0, j)] = new[(0, j)] = _check_hash("leaf_hash", h)
        while j & 1:  # a right child completes its parent
            parent = node_hash(cache[(level, j - 1)], cache[(level, j)])
            level, j = level + 1, j >> 1
            cache[(level, j)] = new[(level, j)] = parent
    return new


class MemoryTree:
    """An append-only Merkle tree held in memory (for tests, tools and receipts)."""

    def __init__(self) -> None:
        self.nodes: dict[tuple[int, int], bytes] = {}
        self.size = 0

    def read(self, keys: Sequence[tuple[int, int]]) -> Mapping[tuple[int, int], bytes]:
        return {k: self.nodes[k] for k in keys}

    def write(self, nodes: Mapping[tuple[int, int], bytes]) -> None:
        self.nodes.update(nodes)

    def append(self, data: bytes) -> int:
        """Append the leaf of ``data``; returns its index."""
        return self.extend([leaf_hash(data)])

    def extend(self, leaf_hashes: Sequence[bytes]) -> int:
        """Append leaf hashes; returns the index of the first."""
        first = self.size
        self.write(append_nodes(self.size, leaf_hashes, self.read))
        self.size += len(leaf_hashes)
        return first

    def root(self, size: int | None = None) -> bytes:
        return root_hash(self.size if size is None else size, self.read)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        return inclusion_proof(index, self.size if size is None else size, self.read)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        return consistency_proof(old_size, self.size if new_size is None else new_size,
                                 self.read)
