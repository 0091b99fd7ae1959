"""The console over plain HTTP: who gets in, CSRF on every form, cookies and headers,
errors as pages naming the parameter, and the words of both languages."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
import yaml

from consolekit import Console, csrf_of, set_cookie, sign_in_form, signed_client
from liveserver import make_settings, prepared
from pgserver import PostgresServer
from xai_sandbox.service.console import AREAS, NAV, NOTICES, messages
from xai_sandbox.store.accounts import Accounts
from xai_sandbox.store.store import RELIABILITY_LEVELS, REVIEW_KINDS, REVIEW_STATES

TEMPLATES = Path(__file__).resolve().parents[2] / "src/xai_sandbox/data/templates/console"
UUID = "00000000-0000-4000-8000-000000000000"


def _console_routes() -> list[tuple[str, str]]:
    out = []
    # One router per console area (the console's router holds them as included routers).
    for route in (route for area in AREAS for route in area.router.routes):
        path = getattr(route, "path", "")
        if path.startswith("/console") and not path.startswith("/console/sign-in"):
            for method in sorted(getattr(route, "methods", ()) or ()):
                if method != "HEAD":
                    out.append((method, re.sub(r"\{[a-z_]+\}", UUID, path)))
    return out


ROUTES = _console_routes()
FORMS = [(m, p) for m, p in ROUTES if m == "POST"]


def test_every_console_page_sends_a_signed_out_visitor_to_sign_in(console: Console
                                                                  ) -> None:
    assert len(ROUTES) >= 20
    with httpx.Client(base_url=console.url) as anonymous:
        for method, path in ROUTES:
            r = anonymous.request(method, path)
            assert r.status_code == 303, (method, path, r.status_code)
            assert r.headers["location"].startswith("/console/sign-in?next=")


@pytest.mark.parametrize(("method", "path"), FORMS)
def test_every_form_is_refused_without_its_csrf_token(console: Console, method: str,
                                                      path: str) -> None:
    with signed_client(console, "adam-admin") as client:
        for data in ({}, {"csrf": "x" * 43}):
            r = client.request(method, path, data=data)
            assert r.status_code == 403, (path, r.text[:300])
            assert "csrf" in r.text and r.headers["content-type"].startswith("text/html")
        # Still signed in: a refused sign-out did not sign out.
        assert client.get("/console/").status_code == 303


def test_a_token_from_another_session_is_refused(console: Console) -> None:
    with signed_client(console, "bob") as bob, signed_client(console, "bob") as other:
        decision = console.server.decisions["bob"]
        foreign = csrf_of(other.get(f"/console/my/{decision}").text)
        r = bob.post(f"/console/my/{decision}/review",
                     data={"csrf": foreign, "kind": "explanation", "reason": "why?"})
        assert r.status_code == 403
        own = csrf_of(bob.get(f"/console/my/{decision}").text)
        r = bob.post(f"/console/my/{decision}/review",
                     data={"csrf": own, "kind": "explanation", "reason": "why?"})
        assert r.status_code == 303 and r.headers["location"].endswith(
            "notice=review_requested")


def test_sign_in_needs_its_form_token_and_refuses_other_sites(console: Console) -> None:
    with httpx.Client(base_url=console.url) as client:
        token, cookie = sign_in_form(client)
        for headers in ({}, {"cookie": "xai_signin=forged"}):
            r = client.post("/console/sign-in", data={"key": console.key("alice"),
                                                      "csrf": token}, headers=headers)
            assert r.status_code == 403 and "csrf" in r.text
        for evil in ("https://evil.example/", "//evil.example/console/", "/v1/models",
                     "/console/\\evil"):
            r = client.post("/console/sign-in", data={
                "key": console.key("alice"), "csrf": token, "next": evil},
                headers={"cookie": f"xai_signin={cookie}"})
            assert r.status_code == 303 and r.headers["location"] == "/console/", evil
        r = client.post("/console/sign-in", data={
            "key": console.key("alice"), "csrf": token, "next": "/console/my?page=1"},
            headers={"cookie": f"xai_signin={cookie}"})
        assert r.headers["location"] == "/console/my?page=1"


def test_cookies_and_headers(console: Console) -> None:
    with httpx.Client(base_url=console.url) as client:
        form = client.get("/console/sign-in")
        assert "frame-ancestors 'none'" in form.headers["content-security-policy"]
        assert "script-src 'self'" in form.headers["content-security-policy"]
        token, signin = csrf_of(form.text), set_cookie(form, "xai_signin")
        r = client.post("/console/sign-in", data={"key": console.key("alice"),
                                                  "csrf": token},
                        headers={"cookie": f"xai_signin={signin}"})
        for name in ("xai_console", "xai_signin"):
            header = next(c for c in form.headers.get_list("set-cookie") +
                          r.headers.get_list("set-cookie")
                          if c.startswith(f"{name}=") and "Max-Age=0" not in c)
            assert {"HttpOnly", "Secure", "SameSite=strict", "Path=/console"} <= {
                part.strip() for part in header.split(";")}, header
        page = client.get("/console/my", headers={
            "cookie": f"xai_console={set_cookie(r, 'xai_console')}"})
        assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
        assert page.headers["x-frame-options"] == "DENY"


def test_revoking_the_key_ends_its_console_session(console: Console) -> None:
    from xai_sandbox.store import Store

    store = Store(console.server.settings)
    try:
        accounts = Accounts(store.engine, store.writer)
        key = accounts.issue_key("aude-auditor", "short-lived")
    finally:
        store.close()
    with httpx.Client(base_url=console.url) as anonymous:
        token, signin = sign_in_form(anonymous)
        r = anonymous.post("/console/sign-in", data={"key": key, "csrf": token},
                           headers={"cookie": f"xai_signin={signin}"})
    with httpx.Client(base_url=console.url, headers={
            "cookie": f"xai_console={set_cookie(r, 'xai_console')}"}) as client:
        assert client.get("/console/audit").status_code == 200
        store = Store(console.server.settings)
        try:
            Accounts(store.engine, store.writer).revoke_key(key.split("_")[1])
        finally:
            store.close()
        r = client.get("/console/audit")
        assert r.status_code == 303 and "sign-in" in r.headers["location"]


def test_bad_input_gets_a_page_naming_the_parameter(console: Console) -> None:
    with signed_client(console, "carl-compliance") as client:
        for query, parameter in (("since=2026-13-40", "since"), ("reliability=shaky",
                                                                 "reliability"),
                                 ("model=nope@1", "model"), ("page=0", "page"),
                                 ("anchor=maybe", "anchor")):
            r = client.get(f"/console/decisions?{query}")
            assert r.status_code == 422, query
            assert parameter in r.text and "<h1>" in r.text
        assert client.get("/console/decisions/not-a-uuid").status_code == 404
        assert client.get(f"/console/decisions/{UUID}").status_code == 404
        r = client.get("/console/audit/consistency?old=5&new=3")
        assert r.status_code == 422 and "old" in r.text
        r = client.get("/console/audit/consistency?old=1&new=2")
        assert r.status_code == 422 and "signed checkpoint" in r.text
    with signed_client(console, "rita-reviewer") as client:
        page = client.get(f"/console/reviews/{console.review_id}")
        r = client.post(f"/console/reviews/{console.review_id}/decision",
                        data={"csrf": csrf_of(page.text), "outcome": "maybe",
                              "rationale": "x"})
        assert r.status_code in (409, 422) and "outcome" in r.text


def test_every_message_exists_in_both_languages() -> None:
    catalogue = messages()
    raw = yaml.safe_load((TEMPLATES.parents[1] / "console/messages.yaml").read_text())
    assert raw == catalogue
    for key, texts in catalogue.items():
        assert set(texts) == {"en", "zh"} and all(v.strip() for v in texts.values()), key
    used = set()
    for template in TEMPLATES.glob("*.html"):
        used |= set(re.findall(r"""\bt\(\s*["']([a-z_.]+)["']""", template.read_text()))
    dynamic = ({f"kind.{k}" for k in REVIEW_KINDS} | {f"status.{s}" for s in REVIEW_STATES}
               | {f"reliability.{r}" for r in (*RELIABILITY_LEVELS, "pending")}
               | {f"impact.{i}" for i in ("high", "medium", "low")}
               | {f"outcome.{o}" for o in ("confirmed", "overridden", "reversed")}
               | {f"notice.{n}" for n in NOTICES}
               | {"sign_in.unknown_key", "error.forbidden", "error.not_found",
                  "error.conflict", "error.invalid", "error.server", "pager.rows"}
               | {key for _, key, _ in NAV})
    prefixes = {k for k in used if k.endswith(".")}  # t("kind." ~ k): built from values
    assert all(any(d.startswith(p) for d in dynamic) for p in prefixes), prefixes
    used -= prefixes
    missing = sorted((used | dynamic) - set(catalogue))
    assert not missing
    unused = sorted(set(catalogue) - used - dynamic)
    assert not unused


def test_the_console_on_postgresql(postgres: PostgresServer, tmp_path: Path) -> None:
    """Sessions, the decisions list and the subject's page on a PostgreSQL store."""
    server = prepared(make_settings(tmp_path, postgres.new_database()))
    server.start()
    try:
        console = Console(server, review_id="", receipt={}, alert_id="")
        with signed_client(console, "carl-compliance") as client:
            page = client.get("/console/decisions?model=credit%403&outcome=bad")
            assert page.status_code == 200 and "DEMO-" in page.text
            assert client.get(f"/console/decisions/{server.decisions['alice']}"
                              ).status_code == 200
            r = client.post("/console/sign-out", data={"csrf": csrf_of(page.text)})
            assert r.status_code == 303
            assert client.get("/console/decisions").status_code == 303
        with signed_client(console, "alice") as client:
            mine = client.get(f"/console/my/{server.decisions['alice']}")
            assert mine.status_code == 200 and "DEMO-ALICE" in mine.text
            assert client.get(f"/console/my/{server.decisions['bob']}").status_code == 404
    finally:
        server.stop()


def test_any_uploaded_file_gets_a_verdict_not_an_error(console: Console) -> None:
    with signed_client(console, "aude-auditor") as client:
        token = csrf_of(client.get("/console/audit").text)
        good = json.dumps(console.receipt).encode()
        for body, status in ((good, 200), (b"not json", 422), (b"[]", 422), (b"{}", 422),
                             (bytes(range(256)), 422),
                             (good.replace(b'"leaf_index": ', b'"leaf_index": 1'), 422)):
            r = client.post("/console/audit/receipt", data={"csrf": token},
                            files={"receipt": ("r.json", body, "application/json")})
            assert r.status_code == status, (body[:40], r.text[-600:])
            assert ("The receipt is valid" in r.text) == (status == 200)
        r = client.post("/console/audit/receipt", data={"csrf": token})
        assert r.status_code == 422 and "receipt" in r.text
