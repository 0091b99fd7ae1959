"""Signing in and out (an API key becomes a session cookie, see
:mod:`xai_sandbox.service.sessions`), the first page of each role, and the console's script."""

from __future__ import annotations

import hmac
import secrets
from datetime import UTC, datetime
from importlib import resources
from typing import Annotated

from fastapi import Form, HTTPException, Query, Request
from fastapi.responses import Response

from xai_sandbox.service.console.pages import (
    COOKIE,
    NAV,
    SIGNIN_COOKIE,
    Csrf,
    P,
    area_router,
    redirect,
    render_page,
    safe_next,
    secure_cookies,
)
from xai_sandbox.service.deps import runtime_of

router = area_router()


@router.get("/sign-in")
def sign_in_form(request: Request, next: Annotated[str | None, Query(max_length=500)] = None
                 ) -> Response:
    """The sign-in form. Its CSRF token is a random value also set as a cookie (double
    submit): a form posted from elsewhere cannot read it."""
    rt = runtime_of(request)
    if rt.sessions.resolve(request.cookies.get(COOKIE)) is not None:
        return redirect(safe_next(next) or "/console/")
    token = request.cookies.get(SIGNIN_COOKIE) or secrets.token_urlsafe(32)
    response = render_page(request, "sign_in.html", signin_csrf=token, next=safe_next(next),
                       error=None)
    response.set_cookie(SIGNIN_COOKIE, token, max_age=3600, path="/console",
                        httponly=True, samesite="strict", secure=secure_cookies(request))
    return response


@router.post("/sign-in")
def sign_in(request: Request, key: Annotated[str, Form(max_length=200)] = "",
            csrf: Csrf = None, next: Annotated[str | None, Form(max_length=500)] = None
            ) -> Response:
    rt = runtime_of(request)
    expected = request.cookies.get(SIGNIN_COOKIE)
    if not csrf or not expected or not hmac.compare_digest(csrf.encode(), expected.encode()):
        raise HTTPException(403, "csrf: the form's token is missing or does not match; "
                                 "reload the sign-in page and send it again")
    wait = rt.key_limit.take(f"sign-in:{request.client.host if request.client else '?'}")
    if wait:
        raise HTTPException(429, f"rate limit: too many sign-in attempts; retry in "
                                 f"{int(wait)} s", headers={"Retry-After": str(int(wait))})
    session = rt.sessions.start(key) if key.strip() else None
    if session is None:
        return render_page(request, "sign_in.html", status=401, signin_csrf=expected,
                       next=safe_next(next), error="sign_in.unknown_key")
    response = redirect(safe_next(next) or "/console/")
    max_age = int((session.expires_at - datetime.now(UTC)).total_seconds())
    response.set_cookie(COOKIE, session.token, max_age=max_age, path="/console",
                        httponly=True, samesite="strict", secure=secure_cookies(request))
    response.delete_cookie(SIGNIN_COOKIE, path="/console")
    return response


@router.post("/sign-out")
def sign_out(p: P, csrf: Csrf = None) -> Response:
    p.check_csrf(csrf)
    p.rt.sessions.end(p.session.token)
    response = redirect("/console/sign-in", notice="signed_out")
    response.delete_cookie(COOKIE, path="/console")
    return response


@router.get("/")
def home(p: P) -> Response:
    """The first page of the principal's navigation."""
    for href, _, roles in NAV:
        if p.who.has(*roles):
            return redirect(href)
    raise HTTPException(403, "role: no console page for your roles")  # pragma: no cover


@router.get("/static/console.js")
def script(p: P) -> Response:
    """The console's one script (served to signed-in pages only, like every page)."""
    body = resources.files("xai_sandbox").joinpath("data/console/console.js").read_bytes()
    return Response(body, media_type="text/javascript")
