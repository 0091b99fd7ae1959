"""The service's root URL: a browser that opens it lands on the web console."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from consolekit import set_cookie, sign_in_form
from liveserver import LiveServer, make_settings
from xai_sandbox.store import Store
from xai_sandbox.store.accounts import Accounts


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A service over an empty store with one admin (no demo models: none are needed)."""
    settings = make_settings(tmp_path_factory.mktemp("root"))
    store = Store(settings)
    try:
        accounts = Accounts(store.engine, store.writer)
        accounts.create_principal("root-admin", ["admin"])
        key = accounts.issue_key("root-admin")
    finally:
        store.close()
    live = LiveServer(settings, {"admin": key}, {}).start()
    try:
        yield live
    finally:
        live.stop()


def test_the_root_redirects_to_the_console_without_credentials(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url) as anonymous:
        r = anonymous.get("/")
    assert r.status_code == 307
    assert r.headers["location"] == "/console/"
    assert r.content == b""


def test_a_signed_out_browser_ends_at_the_sign_in_page(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url, follow_redirects=True) as browser:
        r = browser.get("/")
    assert [h.status_code for h in r.history] == [307, 303]
    assert r.status_code == 200
    assert r.url.path == "/console/sign-in"
    assert r.url.params["next"] == "/console/"
    assert 'name="key"' in r.text


def test_a_signed_in_browser_ends_at_its_first_console_page(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url) as anonymous:
        token, cookie = sign_in_form(anonymous)
        done = anonymous.post("/console/sign-in", data={"key": server.keys["admin"],
                                                        "csrf": token},
                              headers={"cookie": f"xai_signin={cookie}"})
    assert done.status_code == 303, done.text
    session = set_cookie(done, "xai_console")
    # Redirects followed by hand: httpx drops a hand-set Cookie header on a redirect.
    with httpx.Client(base_url=server.url,
                      headers={"cookie": f"xai_console={session}"}) as browser:
        hops = [browser.get("/")]
        while hops[-1].is_redirect and len(hops) < 5:
            hops.append(browser.get(hops[-1].headers["location"]))
    assert [h.status_code for h in hops] == [307, 303, 200]
    assert hops[1].request.url.path == "/console/"
    assert hops[2].request.url.path.startswith("/console/")
    assert not hops[2].request.url.path.startswith("/console/sign-in")


def test_the_root_is_no_part_of_the_api_description(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url) as client:
        paths = client.get("/openapi.json").json()["paths"]
    assert "/" not in paths
    assert "/health" in paths


def test_other_unknown_paths_still_answer_404(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url) as anonymous:
        r = anonymous.get("/no-such-page")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/json")
