"""What every console page shares: the words (``data/console/messages.yaml``, English
and Chinese), rendering with the navigation and security headers, the signed-in request
(:class:`Page`, its roles and CSRF check), paging, and the error page."""

from __future__ import annotations

import functools
import hmac
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import yaml
from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from xai_sandbox.errors import InvalidInputError, NotFoundError
from xai_sandbox.models.schema import LOCALES
from xai_sandbox.reports.render import environment
from xai_sandbox.service.deps import Runtime, read_report, request_locale, require, runtime_of
from xai_sandbox.service.sessions import Session
from xai_sandbox.store.accounts import Principal

COOKIE = "xai_console"
SIGNIN_COOKIE = "xai_signin"
LANG_COOKIE = "xai_lang"
PAGE_SIZE = 50
# Content-Security-Policy of every console page: scripts from this origin only; the
# report's heat table colours its cells with style attributes; charts are data: PNGs.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")

REPORT_PAGES = ("compliance_officer", "auditor", "admin")
AUDIT_PAGES = ("auditor", "compliance_officer", "admin")
QUEUE_PAGES = ("reviewer", "compliance_officer", "admin")
OPERATOR_PAGES = ("operator", "admin")
# (path, message key, roles that see it), in the order of the navigation bar.
NAV = (("/console/my", "nav.my_decisions", ("subject",)),
       ("/console/reviews", "nav.reviews", QUEUE_PAGES),
       ("/console/decisions", "nav.decisions", REPORT_PAGES),
       ("/console/audit", "nav.audit", AUDIT_PAGES),
       ("/console/alerts", "nav.alerts", AUDIT_PAGES),
       ("/console/monitoring", "nav.monitoring", REPORT_PAGES),
       ("/console/models", "nav.models", OPERATOR_PAGES))
NOTICES = ("review_requested", "review_claimed", "review_released", "review_decided",
           "alert_acknowledged", "signed_out")


def area_router() -> APIRouter:
    """The router of one console area (under ``/console``, not in the OpenAPI document)."""
    return APIRouter(prefix="/console", include_in_schema=False)


class SignInRequiredError(Exception):
    """No live session: the visitor is sent to sign in, and back to ``next`` after."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


# ---------------------------------------------------------------------- text
@functools.lru_cache(maxsize=1)
def messages() -> dict[str, dict[str, str]]:
    """The console's words: message key -> locale -> text."""
    raw = resources.files("xai_sandbox").joinpath("data/console/messages.yaml").read_text(
        encoding="utf-8")
    catalogue: dict[str, dict[str, str]] = yaml.safe_load(raw)
    return catalogue


def translator(lang: str) -> Any:
    catalogue = messages()

    def t_(key: str, **values: Any) -> str:
        text = catalogue[key][lang]
        return text.format(**values) if values else text

    return t_


def page_lang(request: Request) -> str:
    """``?lang=``, else the language cookie, else the API's rule (Accept-Language)."""
    for value in (request.query_params.get("lang"), request.cookies.get(LANG_COOKIE)):
        if value in LOCALES:
            return value
    return request_locale(request, None)


def render_page(request: Request, template: str, *, status: int = 200,
            session: Session | None = None, **values: Any) -> HTMLResponse:
    lang = page_lang(request)
    who = session.principal if session is not None else None
    nav = [{"href": href, "label": key, "current": request.url.path.startswith(href)}
           for href, key, roles in NAV if who is not None and who.has(*roles)]
    notice = request.query_params.get("notice")
    html = environment().get_template(f"console/{template}").render(
        t=translator(lang), lang=lang, who=who, csrf=session.csrf if session else None,
        nav=nav, path=request.url.path, lang_urls={code: with_query(request, lang=code)
                                                   for code in LOCALES},
        notice=notice if notice in NOTICES else None, **values)
    response = HTMLResponse(html, status_code=status)
    _page_headers(response)
    if request.query_params.get("lang") in LOCALES:
        response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, path="/console",
                            samesite="strict", secure=secure_cookies(request))
    return response


def with_query(request: Request, **values: str) -> str:
    """This page's URL with ``values`` set in its query (and no notice)."""
    query = [(k, v) for k, v in request.query_params.multi_items()
             if k not in values and k != "notice"]
    return f"{request.url.path}?{urlencode([*query, *values.items()])}"


def _page_headers(response: Response) -> None:
    response.headers["content-security-policy"] = CSP
    response.headers["x-frame-options"] = "DENY"
    response.headers["referrer-policy"] = "same-origin"


def secure_cookies(request: Request) -> bool:
    rt = runtime_of(request)
    return rt.settings.console_secure_cookie


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    """The console's answer to an error: the same message the API gives, as a page."""
    rt = runtime_of(request)
    session = rt.sessions.resolve(request.cookies.get(COOKIE))
    title = {403: "error.forbidden", 404: "error.not_found", 409: "error.conflict"}.get(
        status, "error.invalid" if 400 <= status < 500 else "error.server")
    return render_page(request, "error.html", status=status, session=session, title=title,
                   message=message)


# ---------------------------------------------------------------------- the request
@dataclass
class Page:
    """One signed-in request: the runtime and the session."""

    request: Request
    rt: Runtime
    session: Session

    @property
    def who(self) -> Principal:
        return self.session.principal

    def require(self, *roles: str) -> None:
        require(self.who, *roles)

    def render(self, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        return render_page(self.request, template, status=status, session=self.session,
                       **values)

    def check_csrf(self, token: str | None) -> None:
        if not token or not hmac.compare_digest(token.encode(), self.session.csrf.encode()):
            raise HTTPException(403, "csrf: the form's token is missing or does not match "
                                     "this sign-in; reload the page and send it again")


def signed_in(request: Request) -> Page:
    """The signed-in request, or a redirect to sign in (and back here after)."""
    rt = runtime_of(request)
    session = rt.sessions.resolve(request.cookies.get(COOKIE))
    if session is None:
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInRequiredError(here)
    return Page(request, rt, session)


P = Annotated[Page, Depends(signed_in)]
Csrf = Annotated[str | None, Form()]


def redirect(path: str, **query: str) -> RedirectResponse:
    return RedirectResponse(path + (f"?{urlencode(query)}" if query else ""),
                            status_code=303)


def safe_next(value: str | None) -> str | None:
    """Only a path of this console: never another site (open redirects)."""
    if value and value.startswith("/console/") and not value.startswith("//") \
            and "\\" not in value and "://" not in value:
        return value
    return None


def pager(total: int, capped: bool, page: int, size: int) -> dict[str, Any]:
    last = max((total - 1) // size + 1, 1)
    return {"page": page, "size": size, "total": total, "capped": capped,
            "first_row": (page - 1) * size + 1 if total else 0,
            "last_row": min(page * size, total), "has_prev": page > 1,
            "has_next": page < last or capped, "last": last}


def page_url(request: Request, page: int) -> str:
    return with_query(request, page=str(page))


PageNo = Annotated[int, Query(ge=1, le=100_000)]


def as_uuid(name: str, value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError as exc:
        raise NotFoundError(name, "must be a recorded id", value) from exc


def full_report(p: Page, decision_id: str, action: str, purpose: str
                 ) -> Mapping[str, Any]:
    """The full report, read under the API's rule: the same roles, limits and access
    event (written before the report is assembled, so the report lists it)."""
    return read_report(p.rt, p.who, decision_id, action, purpose)


def choice(name: str, value: str | None, allowed: tuple[str, ...]) -> str | None:
    if not value:
        return None
    if value not in allowed:
        raise InvalidInputError(name, f"must be one of {list(allowed)}", value)
    return value


Text = Annotated[str | None, Query(max_length=260)]


def login_url(next_path: str) -> str:
    return f"/console/sign-in?next={quote(next_path, safe='')}"
