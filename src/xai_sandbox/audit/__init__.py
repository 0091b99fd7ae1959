"""The audit core, pure: canonical JSON, Merkle math, signed notes, the log's appends,
checkpoints and receipts, and its verification, over any
:class:`~xai_sandbox.audit.merkle.NodeStore` and iterators of entries. It imports nothing
of the package but :mod:`xai_sandbox.errors`; the store keeps the log in its tables."""

from xai_sandbox.audit.canonical import canonical_json, canonical_loads

__all__ = ["canonical_json", "canonical_loads"]
