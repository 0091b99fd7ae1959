"""The FastAPI application: authentication, errors, limits and metrics around the routes.

Everything the routes do is a library call (:class:`~xai_sandbox.reports.pipeline.Decider`,
:class:`~xai_sandbox.store.Store`); this module adds who may call what, how errors map to
HTTP statuses, and the background workers.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
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

__all__ = ["Runtime", "create_app"]

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
    detail: Any = str(exc)
    if status == 422:
        detail = [{"loc": ["body", *exc.parameter.split(".")], "msg": exc.rule,
                   "type": type(exc).__name__, "value": _json_value(exc.value),
                   "message": str(exc)}]
    return JSONResponse({"detail": detail}, status_code=status)


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

    return error_page(request, status, message)


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value][:20]
    return repr(value)[:200]


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
