"""Boundary checks shared by the text methods: each raises ``InvalidInputError`` naming the
parameter, the rule and the value."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from xai_sandbox.errors import InvalidInputError

__all__ = ["choice", "integer", "texts", "unit_interval"]


def integer(name: str, value: Any, low: int, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]`` (no upper bound when ``high`` is None)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low or (
            high is not None and value > high):
        rule = f"must be an integer in [{low}, {high}]" if high is not None else (
            f"must be an integer >= {low}")
        raise InvalidInputError(name, rule, value)
    return int(value)


def choice(name: str, value: Any, allowed: Sequence[Any]) -> Any:
    if value not in allowed:
        raise InvalidInputError(name, f"must be one of {list(allowed)}", value)
    return value


def unit_interval(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise InvalidInputError(name, "must be a number strictly between 0 and 1", value)
    return float(value)


def texts(name: str, value: Any, *, single: bool = False) -> list[str]:
    """A non-empty list of non-empty texts; with ``single``, one text is a list of one."""
    if single and isinstance(value, str):
        value = [value]
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise InvalidInputError(name, "must be a list of texts" + (
            " or one text" if single else ""), type(value).__name__)
    batch = list(value)
    bad = [i for i, t in enumerate(batch) if not isinstance(t, str) or not t.strip()]
    if not batch or bad:
        raise InvalidInputError(name, "must be a non-empty list of non-empty strings",
                                f"{len(batch)} texts, bad rows {bad[:5]}")
    return batch
