"""The checks of the text fields every record takes, and the time records are stamped with."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from xai_sandbox.errors import InvalidInputError

__all__ = ["ID_TEXT", "check_text", "utcnow"]

ID_TEXT = 128


def utcnow() -> datetime:
    return datetime.now(UTC)


def check_text(name: str, value: Any, limit: int = ID_TEXT) -> str:
    """``value`` if it is a non-empty string of at most ``limit`` characters."""
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise InvalidInputError(name, f"must be a non-empty string of at most {limit} "
                                "characters", value)
    return value
