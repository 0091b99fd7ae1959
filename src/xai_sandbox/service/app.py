"""The FastAPI application: settings, the runtime's lifespan, middleware, how errors map
to HTTP statuses, and the routers.

Everything the routes do is a library call (the runtime's decider and store,
:mod:`xai_sandbox.service.deps`); this module only assembles the app. The entry points
(``xai-sandbox serve``, the tests) are the only importers of this module.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from xai_sandbox.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    UnsupportedModelError,
    XaiSandboxError,
)
from xai_sandbox.service.console import SignInRequiredError, error_page, login_url
from xai_sandbox.service.console import router as console_router
from xai_sandbox.service.deps import Runtime
from xai_sandbox.service.middleware import BodyLimit, Observed, UploadTooLargeError
from xai_sandbox.service.routes import router as api_router
from xai_sandbox.service.schemas import ModelRequest
from xai_sandbox.service.strict import clean_message, json_value
from xai_sandbox.settings import Settings

__all__ = ["create_app"]

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


def create_app(settings: Settings | None = None, *, start_workers: bool = True) -> FastAPI:
    """The service over the store that ``settings`` names (defaults: the environment)."""
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt = Runtime.open(settings, job_workers=start_workers)
        app.state.rt = rt
        # Models and libraries are a million long-lived objects: moved out of the
        # collector's reach, a full collection no longer stalls every request for
        # a tenth of a second.
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 50, 1000)  # fewer young collections per request
        rt.start(webhooks=start_workers)
        try:
            yield
        finally:
            rt.close()

    app = FastAPI(title="XAI-Sandbox", version="0.1.0", description=DESCRIPTION,
                  lifespan=lifespan,
                  openapi_tags=[{"name": n} for n in ("models", "decisions", "reports",
                                                       "reviews", "alerts", "audit",
                                                       "operations")])
    error_handlers(app)
    app.add_middleware(Observed)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes,
                       upload_limit=settings.max_upload_bytes)
    app.include_router(api_router)
    app.include_router(console_router)

    @app.get("/", include_in_schema=False)
    def _root() -> RedirectResponse:
        """A browser at the root goes to the console; the console itself sends a
        signed-out visitor to sign in (not in OpenAPI: it is no part of the API)."""
        return RedirectResponse("/console/", status_code=307)

    openapi_security(app)
    return app


# ---------------------------------------------------------------------- errors
def error_handlers(app: FastAPI) -> None:
    """The library's errors as statuses (404, 409, 422, else 500), with the same message
    as a JSON body for the API and as a page for the console."""
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

    @app.exception_handler(UploadTooLargeError)
    async def _too_large(request: Request, exc: UploadTooLargeError) -> Response:
        return JSONResponse({"detail": str(exc)}, status_code=413)

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
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
            # FastAPI's answer to a body that is not UTF-8: a 422 like any bad body, as
            # the OpenAPI document says, naming the rule.
            exc = StarletteHTTPException(422, "body: must be JSON encoded as UTF-8")
        if exc.status_code == 405:  # every method of the path, not one route's
            exc = StarletteHTTPException(405, exc.detail, headers={
                "Allow": ", ".join(_methods_of(request.app, request.scope))})
        if _console(request) and exc.status_code >= 400:
            response = _console_error(request, exc.status_code, str(exc.detail))
            response.headers.update(exc.headers or {})
            return response
        return await http_exception_handler(request, exc)

    @app.exception_handler(SignInRequiredError)
    async def _sign_in(_: Request, exc: SignInRequiredError) -> Response:
        return RedirectResponse(login_url(exc.next_path), status_code=303)


def _methods_of(app: FastAPI, scope: Any) -> list[str]:
    """The methods the request's path answers, over every route (Starlette names only the
    first matching route's in a 405's Allow)."""
    return [method for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
            if any(route.matches({**scope, "method": method})[0] == Match.FULL
                   for route in app.router.routes)]


def _error(status: int, exc: InvalidInputError | UnsupportedModelError) -> JSONResponse:
    detail: Any = clean_message(str(exc))
    if status == 422:
        detail = [{"loc": ["body", *exc.parameter.split(".")], "msg": clean_message(exc.rule),
                   "type": type(exc).__name__, "value": json_value(exc.value),
                   "message": detail}]
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
    return error_page(request, status, clean_message(message))


# ---------------------------------------------------------------------- OpenAPI
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
            # The JSON body of POST /v1/models, which reads its body itself (JSON or
            # multipart) and so names the model only in its openapi_extra.
            request = ModelRequest.model_json_schema(
                ref_template="#/components/schemas/{model}")
            schemas = schema["components"].setdefault("schemas", {})
            schemas.update(request.pop("$defs", {}))
            schemas["ModelRequest"] = request
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = build  # type: ignore[method-assign]
