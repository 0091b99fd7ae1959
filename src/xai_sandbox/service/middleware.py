"""The ASGI middleware around every answer: the body limit (413) and the Prometheus
request metrics with the headers every answer carries."""

from __future__ import annotations

import time

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import xai_sandbox.service.metrics as metrics

__all__ = ["BodyLimit", "Observed", "UploadTooLargeError"]

# Where a multipart body is an upload with its own, larger limit (streamed, not buffered).
UPLOAD_PATHS = frozenset({"/v1/models"})


class UploadTooLargeError(Exception):
    """An upload body passed its limit while streaming in (answered 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"body: must be at most {limit} bytes")
        self.limit = limit


class BodyLimit:
    """413 for a request body over ``limit`` bytes, declared or streamed.

    A ``multipart/form-data`` body on an upload path (:data:`UPLOAD_PATHS`) has the limit
    ``upload_limit`` instead and is passed on as it streams in, counted: past the limit,
    reading it raises :class:`UploadTooLargeError`.
    """

    def __init__(self, app: ASGIApp, limit: int, upload_limit: int | None = None) -> None:
        self.app = app
        self.limit = limit
        self.upload_limit = upload_limit or limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        upload = (scope.get("path") in UPLOAD_PATHS and headers.get(
            b"content-type", b"").lower().startswith(b"multipart/form-data"))
        limit = self.upload_limit if upload else self.limit
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(limit, send)
            return
        if upload:
            await self.app(scope, _counted(receive, limit), send)
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


def _counted(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise UploadTooLargeError(limit)
        return message

    return counted


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
