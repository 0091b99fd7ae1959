"""The one exception hierarchy of XAI-Sandbox.

Every error raised at a public boundary subclasses both :class:`XaiSandboxError` and the
built-in a caller would expect (``ValueError`` for bad values, ``TypeError`` for an
unsuitable model), and its message names the parameter, the rule and the value::

    inputs: must be finite (no NaN or infinity); got NaN at row 0, column 3
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "ConflictError",
    "ExplanationError",
    "InvalidInputError",
    "InvalidTargetError",
    "NotDifferentiableError",
    "NotFoundError",
    "RenderError",
    "SchemaError",
    "UnknownMethodError",
    "UnsupportedModelError",
    "XaiSandboxError",
    "known_fields",
    "number_in",
]


def _show(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class XaiSandboxError(Exception):
    """Base class of every error XAI-Sandbox raises on purpose."""

    def __reduce__(self) -> Any:
        # Pickled as built (parameter, rule, value), not from the message alone: an error
        # raised in another process (a Ray task) comes back as the same typed error.
        if all(hasattr(self, k) for k in ("parameter", "rule", "value")):
            return type(self), (self.parameter, self.rule, self.value)  # type: ignore[attr-defined]
        return super().__reduce__()


class InvalidInputError(XaiSandboxError, ValueError):
    """A value passed to a public function breaks a rule.

    Attributes
    ----------
    parameter, rule, value:
        Which parameter, what it must be, and what it got.
    """

    def __init__(self, parameter: str, rule: str, value: Any) -> None:
        self.parameter = parameter
        self.rule = rule
        self.value = value
        super().__init__(f"{parameter}: {rule}; got {_show(value)}")


class NotFoundError(InvalidInputError):
    """An identifier names no record (the service answers 404)."""


class ConflictError(InvalidInputError):
    """The request is valid but the record's state forbids it now (already decided,
    claimed by someone else, a request already pending; the service answers 409)."""


class InvalidTargetError(InvalidInputError):
    """The target (or foil) class is not an output of the model."""


class SchemaError(InvalidInputError):
    """A feature schema, or a row checked against one, breaks a rule of the schema."""


class UnknownMethodError(InvalidInputError):
    """No explainer of that name is registered; the message lists the registered ones."""


class UnsupportedModelError(XaiSandboxError, TypeError):
    """The model cannot be wrapped, or the method cannot run on this kind of model."""

    def __init__(self, parameter: str, rule: str, value: Any) -> None:
        self.parameter = parameter
        self.rule = rule
        self.value = value
        super().__init__(f"{parameter}: {rule}; got {_show(value)}")


class NotDifferentiableError(UnsupportedModelError):
    """A gradient method was asked of a model that has no gradients."""


class ExplanationError(XaiSandboxError, RuntimeError):
    """A method ran but its result failed its own check (for example LRP conservation)."""


class RenderError(XaiSandboxError, RuntimeError):
    """A report cannot be rendered faithfully here (for example a character that no font of
    the page's font stack has, which would print as an empty box).

    Attributes
    ----------
    parameter, rule, value:
        What was rendered, the rule it broke, and what broke it.
    """

    def __init__(self, parameter: str, rule: str, value: Any) -> None:
        self.parameter = parameter
        self.rule = rule
        self.value = value
        super().__init__(f"{parameter}: {rule}; got {value}")


def known_fields(raw: Any, known: Iterable[str], parameter: str) -> Mapping[str, Any]:
    """``raw`` as a mapping of settings, all of them among ``known``, or the error."""
    if not isinstance(raw, Mapping):
        raise InvalidInputError(parameter, "must be a mapping", raw)
    names = sorted(known)
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise InvalidInputError(parameter, f"unknown fields (known: {names})", unknown)
    return raw


def number_in(value: Any, low: float, high: float, parameter: str, *,
              integer: bool = False, nullable: bool = False) -> Any:
    """``value`` if it is a number (an integer with ``integer``) in ``[low, high]``, or
    ``None`` with ``nullable``; otherwise the error naming the rule. Booleans are not
    numbers here."""
    if value is None and nullable:
        return None
    kind = int if integer else int | float
    if isinstance(value, bool) or not isinstance(value, kind) or not low <= value <= high:
        what = "an integer" if integer else "a number"
        rule = f"must be {'null or ' if nullable else ''}{what} in [{low}, {high}]"
        raise InvalidInputError(parameter, rule, value)
    return value
