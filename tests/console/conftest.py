"""The console in a real browser: Debian's Chromium driven by Playwright, against a live
service on loopback (helpers in ``tests/consolekit.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from consolekit import CHROMIUM, CHROMIUM_ARGS, Console
from liveserver import make_settings, prepared
from xai_sandbox.monitor.alerts import raise_alert
from xai_sandbox.store import Store
from xai_sandbox.workflows import Decider


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    settings = make_settings(tmp_path_factory.mktemp("console"))
    server = prepared(settings)
    store = Store(settings)
    try:
        decider = Decider(store)
        decider.load_registered()
        store.log.checkpoint()
        review = decider.request_review(server.decisions["bob"],
                                        requested_by="bob", reason="My income has risen.")
        store.log.checkpoint()
        leaf = store.leaf_of(f"decisions:{server.decisions['alice']}")
        receipt = store.receipt(leaf).to_dict()
        alert = raise_alert(store, "explanation_drift",
                            {"title": "explanation drift on duration of credit@3",
                             "model": "credit@3", "feature": "duration"},
                            dedup_key="drift:credit@3:duration")
        assert alert is not None
    finally:
        store.close()
    server.start()
    try:
        yield Console(server, review["review_id"], receipt, alert)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package "
                    "(make test does)", pytrace=False)
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(locale="en-GB", accept_downloads=True)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()
