"""Canonical JSON and (in later layers) the tamper-evident audit log."""

from xai_sandbox.audit.canonical import canonical_json, canonical_loads

__all__ = ["canonical_json", "canonical_loads"]
