"""The FastAPI application: authentication, errors, limits and metrics around the routes.

Everything the routes do is a library call (:class:`~xai_sandbox.reports.pipeline.Decider`,
:class:`~xai_sandbox.store.Store`); this module adds who may call what, how errors map to
HTTP statuses, and the background workers.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import math
import re
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from xai_sandbox.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    UnsupportedModelError,
    XaiSandboxError,
)
from xai_sandbox.monitor.alerts import WebhookDispatcher
from xai_sandbox.reports.pipeline import Decider
from xai_sandbox.reports.text import TextExplainer
from xai_sandbox.service import metrics
from xai_sandbox.service.background import AccessRecorder, JobPool
from xai_sandbox.service.ratelimit import RateLimiter
from xai_sandbox.service.sessions import Sessions
from xai_sandbox.settings import Settings
from xai_sandbox.store.accounts import Accounts
from xai_sandbox.store.store import Store

if TYPE_CHECKING:
    from xai_sandbox.service.console import Verifications

__all__ = ["Runtime", "StrictJSONRoute", "create_app"]

log = logging.getLogger("xai_sandbox.service")

DESCRIPTION = """
Explanations of automated decisions for the people who act on them.

* **Operators** register models and send decisions (`POST /v1/decisions`).
* **The person decided about** reads the decision in plain language
  (`GET /v1/decisions/{id}`) and asks for a human review.
* **Reviewers** work the review queue; **compliance officers and auditors** read full
  reports (JSON, HTML, PDF) and verify the audit log.

Every endpoint but `/health` and the public checkpoint needs a bearer API key
(`Authorization: Bearer xai_...`). Every read of a report is written to the audit log.
"""


@dataclass
class Runtime:
    """What the routes share: the store, the decider, accounts, workers and limits."""

    settings: Settings
    store: Store
    decider: Decider
    accounts: Accounts
    access: AccessRecorder
    pool: JobPool
    subject_limit: RateLimiter
    key_limit: RateLimiter
    compute_slots: threading.BoundedSemaphore
    webhooks: WebhookDispatcher
    text: TextExplainer
    sessions: Sessions
    verifications: Verifications


class BodyLimit:
    """413 for a request body over ``limit`` bytes, declared or streamed."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _too_large(self.limit, send)
            return
        # A body without a declared length is read here first (it is small by rule), so
        # an oversized one is refused before the application sees any of it.
        chunks: list[bytes] = []
        seen = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.limit:
                await _too_large(self.limit, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _too_large(limit: int, send: Send) -> None:
    body = JSONResponse({"detail": f"body: must be at most {limit} bytes"}, status_code=413)
    await send({"type": "http.response.start", "status": 413,
                "headers": body.raw_headers})
    await send({"type": "http.response.body", "body": body.body})


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
    exc = InvalidInputError(where or "body", rule, _json_value(value))
    return HTTPException(422, detail=[{
        "loc": ["body", *map(_json_value, loc)], "msg": rule, "type": "InvalidInputError",
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


class Observed:
    """Request count and latency per route (Prometheus), and headers every answer
    carries; a plain ASGI middleware (no per-request task or body copy)."""

    _HEADERS = ((b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff"))

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    h for h in self._HEADERS if h[0] not in names]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            metrics.REQUESTS.labels(path, scope["method"], str(status)).inc()
            metrics.LATENCY.labels(path).observe(time.perf_counter() - start)


def _error(status: int, exc: InvalidInputError | UnsupportedModelError) -> JSONResponse:
    detail: Any = clean_message(str(exc))
    if status == 422:
        detail = [{"loc": ["body", *exc.parameter.split(".")], "msg": clean_message(exc.rule),
                   "type": type(exc).__name__, "value": _json_value(exc.value),
                   "message": detail}]
    return JSONResponse({"detail": detail}, status_code=status)


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


def _handler(status: int) -> Any:
    async def handle(request: Request, exc: Exception) -> Response:
        if _console(request):
            return _console_error(request, status, str(exc))
        return _error(status, exc)  # type: ignore[arg-type]
    return handle


def _console(request: Request) -> bool:
    return request.url.path.startswith("/console")


def _console_error(request: Request, status: int, message: str) -> Response:
    from xai_sandbox.service.console import error_page

    return error_page(request, status, clean_message(message))


def _json_value(value: Any) -> Any:
    """``value`` as JSON can hold it: a non-finite number as its repr, text cleaned."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return clean_message(value)
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value[:20]]
    return clean_message(repr(value)[:200])


def create_app(settings: Settings | None = None, *, start_workers: bool = True) -> FastAPI:
    """The service over the store that ``settings`` names (defaults: the environment)."""
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = Store(settings)
        decider = Decider(store)
        decider.load_registered()
        from xai_sandbox.service.console import Verifications

        accounts = Accounts(store.engine, store.writer,
                            cache_seconds=settings.key_cache_seconds)
        rt = Runtime(settings=settings, store=store, decider=decider, accounts=accounts,
                     access=AccessRecorder(store),
                     pool=JobPool(decider, settings.job_workers if start_workers else 0),
                     subject_limit=RateLimiter(settings.rate_limit_subject_per_minute),
                     key_limit=RateLimiter(settings.rate_limit_key_per_minute),
                     compute_slots=threading.BoundedSemaphore(settings.compute_concurrency),
                     webhooks=WebhookDispatcher(store), text=TextExplainer(decider),
                     sessions=Sessions(store.engine, store.writer, accounts,
                                       hours=settings.console_session_hours),
                     verifications=Verifications())
        app.state.rt = rt
        # Models and libraries are a million long-lived objects: moved out of the
        # collector's reach, a full collection no longer stalls every request for
        # a tenth of a second.
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 50, 1000)  # fewer young collections per request
        rt.pool.start()
        if start_workers:
            rt.webhooks.start()
        try:
            yield
        finally:
            rt.webhooks.stop()
            rt.pool.stop()
            rt.access.stop()
            store.close()

    app = FastAPI(title="XAI-Sandbox", version="0.1.0", description=DESCRIPTION,
                  lifespan=lifespan,
                  openapi_tags=[{"name": n} for n in ("models", "decisions", "reports",
                                                       "reviews", "alerts", "audit",
                                                       "operations")])

    # The most specific class first: NotFound and Conflict are InvalidInputErrors.
    for exc_type, status in ((NotFoundError, 404), (ConflictError, 409),
                             (InvalidInputError, 422), (UnsupportedModelError, 422)):
        app.add_exception_handler(exc_type, _handler(status))

    @app.exception_handler(XaiSandboxError)
    async def _other(request: Request, exc: XaiSandboxError) -> Response:
        log.error("explanation failed: %s", type(exc).__name__)
        message = f"{type(exc).__name__}: the explanation could not be computed"
        if _console(request):
            return _console_error(request, 500, message)
        return JSONResponse({"detail": message}, status_code=500)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
                  for e in exc.errors()]
        if _console(request):
            return _console_error(request, 422, "; ".join(
                f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in errors))
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if _console(request) and exc.status_code >= 400:
            response = _console_error(request, exc.status_code, str(exc.detail))
            response.headers.update(exc.headers or {})
            return response
        return await http_exception_handler(request, exc)

    from xai_sandbox.service.console import SignInRequiredError, login_url

    @app.exception_handler(SignInRequiredError)
    async def _sign_in(_: Request, exc: SignInRequiredError) -> Response:
        return RedirectResponse(login_url(exc.next_path), status_code=303)

    app.add_middleware(Observed)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)

    from xai_sandbox.service import console, routes

    app.include_router(routes.router)
    app.include_router(console.router)

    @app.get("/", include_in_schema=False)
    def _root() -> RedirectResponse:
        """A browser at the root goes to the console; the console itself sends a
        signed-out visitor to sign in (not in OpenAPI: it is no part of the API)."""
        return RedirectResponse("/console/", status_code=307)

    openapi_security(app)
    return app


def openapi_security(app: FastAPI) -> None:
    """Declare the bearer-key scheme once, for every operation but the public ones."""
    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes,
                                 tags=app.openapi_tags)
            schema.setdefault("components", {})["securitySchemes"] = {"bearer": {
                "type": "http", "scheme": "bearer",
                "description": "an API key: xai_<key id>_<secret>"}}
            schema["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = build  # type: ignore[method-assign]
