"""The wire's rules: request bodies parsed strictly (:func:`strict_json`, the routes'
:class:`StrictJSONRoute`) and error text fit for an answer (:func:`clean_message`)."""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute

from xai_sandbox.errors import InvalidInputError
from xai_sandbox.service.schemas import ERROR_RESPONSES

__all__ = ["MAX_JSON_DEPTH", "StrictJSONRoute", "clean_message", "json_value", "resource_router",
           "strict_json"]


class _OutOfRange(str):
    """A JSON number that no float holds (NaN, an infinity, 1e999), kept as its text."""


def _finite_int(text: str) -> int | _OutOfRange:
    if len(text) > 400:  # beyond any float, and int() refuses more than 4300 digits
        return _OutOfRange(text)
    number = int(text)
    return number if abs(number) <= sys.float_info.max else _OutOfRange(text)


def _finite_float(text: str) -> float | _OutOfRange:
    number = float(text)
    return number if math.isfinite(number) else _OutOfRange(text)


MAX_JSON_DEPTH = 64


def strict_json(raw: bytes) -> Any:
    """``raw`` parsed as JSON, refusing what Python's parser takes but JSON has not or the
    service cannot store: NaN and infinities (literal, or as 1e999), numbers beyond the
    float range, text with unpaired surrogates or NUL characters, and nesting deeper than
    :data:`MAX_JSON_DEPTH`. The error names the field by its path (422)."""
    try:
        value = json.loads(raw, parse_constant=_OutOfRange, parse_float=_finite_float,
                           parse_int=_finite_int)
    except UnicodeDecodeError as exc:
        raise _bad_body([], "must be UTF-8 JSON", f"byte {exc.start}") from None
    except RecursionError:
        raise _bad_body([], f"must nest at most {MAX_JSON_DEPTH} levels", "deeper") from None
    stack: list[tuple[list[str | int], Any]] = [([], value)]
    while stack:
        loc, item = stack.pop()
        if len(loc) > MAX_JSON_DEPTH:
            raise _bad_body(loc[:MAX_JSON_DEPTH], f"must nest at most {MAX_JSON_DEPTH} levels",
                            "deeper")
        if isinstance(item, _OutOfRange):
            raise _bad_body(loc, "must be a finite number (no NaN or infinity; at most "
                                 "1.8e308 in magnitude)", str(item)[:40])
        if isinstance(item, str):
            _check_text(loc, item)
        elif isinstance(item, dict):
            for key, v in item.items():
                _check_text([*loc, key], key)
                stack.append(([*loc, key], v))
        elif isinstance(item, list):
            stack.extend(([*loc, i], v) for i, v in enumerate(item))
    return value


def _check_text(loc: list[str | int], text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _bad_body(loc, "must be Unicode text (no unpaired surrogate)",
                        text[:40]) from None
    if "\x00" in text:
        raise _bad_body(loc, "must not contain NUL characters", text[:40])


def _bad_body(loc: list[str | int], rule: str, value: str) -> HTTPException:
    # An HTTPException: FastAPI lets it through its body parsing (any other error there
    # becomes a 400 that names nothing).
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    exc = InvalidInputError(where or "body", rule, json_value(value))
    return HTTPException(422, detail=[{
        "loc": ["body", *map(json_value, loc)], "msg": rule, "type": "InvalidInputError",
        "value": exc.value, "message": clean_message(str(exc))}])


class _StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = strict_json(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    """A route whose JSON body is parsed by :func:`strict_json`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            return await handler(_StrictJSONRequest(request.scope, request.receive))

        return handle


# A native library's message (XGBoost's, say) carries a log prefix with the source file, a
# stack trace with the paths of shared libraries, and lines drawn as a caret diagram.
_NATIVE_PREFIX = re.compile(r"\[\d{2}:\d{2}:\d{2}\] [^\s:]+:\d+: ")
_NATIVE_TRACE = re.compile(r"\s*Stack trace:(?:\s*\[bt\][^\n]*)*\s*")
_PATH = re.compile(r"(?<![\w.~/:])(?:/[\w.+@~-]+){2,}/?")  # not a URL's path


def clean_message(text: str) -> str:
    """``text`` fit for an answer: one line, without a native stack trace, server paths
    or unpaired surrogates (which are not JSON)."""
    text = _NATIVE_TRACE.sub("", _NATIVE_PREFIX.sub("", text))
    text = _PATH.sub("<path>", text)
    text = " ".join(text.split())
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def json_value(value: Any) -> Any:
    """``value`` as JSON can hold it: a non-finite number as its repr, text cleaned."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return clean_message(value)
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value[:20]]
    return clean_message(repr(value)[:200])


def resource_router(tag: str) -> APIRouter:
    """The router of one resource: its operations under ``tag``, bodies parsed strictly
    (NaN, infinities and unstorable text are 422 naming the field), and the error
    answers every operation documents."""
    return APIRouter(tags=[tag], responses=ERROR_RESPONSES, route_class=StrictJSONRoute)
