"""What the console's tests share: the live console, signing in (browser and HTTP), the
accessibility check and screenshots. Screenshots are kept under
``test-artifacts/console/`` (or ``$XAI_SANDBOX_ARTIFACTS/console``)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page

from liveserver import LiveServer
from xai_sandbox.store import Store

CHROMIUM = "/usr/bin/chromium"
# Chromium on a machine with no network: no background fetches, no sandbox (root in CI).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic", "--disable-dev-shm-usage"]
WCAG = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}}
ARTEFACTS = Path(os.environ.get("XAI_SANDBOX_ARTIFACTS")
                 or Path(__file__).resolve().parents[1] / "test-artifacts") / "console"


@dataclass
class Console:
    """The live service with its demo data, and what the journeys need of it."""

    server: LiveServer
    review_id: str          # a pending human review of bob's decision
    receipt: dict[str, Any]  # the receipt of alice's decision (as the API gave it)
    alert_id: str

    @property
    def url(self) -> str:
        return self.server.url

    def key(self, who: str) -> str:
        return self.server.keys[who]

    def store(self) -> Store:
        return Store(self.server.settings)


def sign_in(page: Page, console: Console, who: str, path: str = "/console/") -> None:
    """Sign in through the form, by keyboard: Tab to the key field, type, Enter."""
    page.goto(console.url + path)
    assert "/console/sign-in" in page.url
    page.get_by_label("API key").focus()
    page.keyboard.type(console.key(who))
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert "/console/sign-in" not in page.url, page.url


def accessible(page: Page, name: str) -> None:
    """No WCAG 2.1 A/AA violation by axe-core on this page; a screenshot kept."""
    shot(page, name)
    results = Axe().run(page, options=WCAG)
    assert results.violations_count == 0, results.generate_report()


def shot(page: Page, name: str) -> Path:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTEFACTS / f"{re.sub(r'[^a-z0-9-]+', '-', name.lower())}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return path


def set_cookie(response: httpx.Response, name: str) -> str:
    """The value a response sets for cookie ``name`` (httpx, rightly, keeps Secure
    cookies from plain-HTTP requests, so the tests carry them by hand)."""
    for header in response.headers.get_list("set-cookie"):
        if header.startswith(f"{name}="):
            return header.split(";")[0].split("=", 1)[1]
    raise AssertionError(f"no {name} cookie set")


def sign_in_form(client: httpx.Client) -> tuple[str, str]:
    """The sign-in form's CSRF token and the cookie it must match."""
    form = client.get("/console/sign-in")
    return csrf_of(form.text), set_cookie(form, "xai_signin")


def signed_client(console: Console, who: str) -> httpx.Client:
    """An HTTP client signed in through the form, as a browser would be."""
    with httpx.Client(base_url=console.url, timeout=60) as anonymous:
        token, cookie = sign_in_form(anonymous)
        done = anonymous.post("/console/sign-in", data={"key": console.key(who),
                                                        "csrf": token},
                              headers={"cookie": f"xai_signin={cookie}"})
    assert done.status_code == 303, done.text
    session = set_cookie(done, "xai_console")
    return httpx.Client(base_url=console.url, timeout=60,
                        headers={"cookie": f"xai_console={session}"})


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)
