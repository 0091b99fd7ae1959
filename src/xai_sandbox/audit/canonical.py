"""RFC 8785 (JSON Canonicalization Scheme) encoding.

Everything that is hashed or signed in XAI-Sandbox goes through :func:`canonical_json`, so
the same object always gives the same bytes, in any process and on any machine.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import rfc8785

from xai_sandbox.errors import InvalidInputError

__all__ = ["canonical_json", "canonical_loads"]


def _check(value: Any, path: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInputError(path, "canonical JSON holds finite numbers only", value)
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInputError(path, "canonical JSON keys must be strings", key)
            _check(item, f"{path}.{key}")
    elif isinstance(value, Sequence) and not isinstance(value, str | bytes):
        for i, item in enumerate(value):
            _check(item, f"{path}[{i}]")


def canonical_json(value: Any) -> bytes:
    """Return the RFC 8785 canonical UTF-8 encoding of a JSON-compatible value.

    Raises
    ------
    InvalidInputError
        If the value holds NaN, infinity, a non-string key or a non-JSON type.
    """
    _check(value, "value")
    try:
        return bytes(rfc8785.dumps(value))
    except (rfc8785.CanonicalizationError, TypeError) as exc:
        raise InvalidInputError("value", f"must be JSON-compatible ({exc})", type(value)) from exc


def canonical_loads(data: bytes | str) -> Any:
    """Parse JSON text (canonical or not); the inverse of :func:`canonical_json`."""
    return json.loads(data)
