"""The main journey of every role through the console in Debian's Chromium, each page
checked by axe-core (WCAG 2.1 A and AA) and kept as a screenshot."""

from __future__ import annotations

import json
import re

from playwright.sync_api import BrowserContext, Page, expect

from consolekit import Console, accessible, shot, sign_in
from xai_sandbox.store.store import DecisionFilter

PHONE = {"width": 390, "height": 844}


def _fits_width(page: Page) -> bool:
    """Nothing wider than the screen: wide tables scroll inside their own box."""
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def test_subject_reads_decision_asks_review_and_sees_due_date(page: Page,
                                                             console: Console) -> None:
    sign_in(page, console, "alice")
    assert page.url.endswith("/console/my")
    accessible(page, "subject-1-my-decisions")
    page.get_by_role("link", name="DEMO-ALICE").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("DEMO-ALICE")
    outcome = page.locator("#outcome").inner_text()
    assert outcome in ("declined", "approved")
    reasons = page.locator("#reasons li")
    assert 1 <= reasons.count() <= 4
    assert re.search(r"Impact: (high|medium|low)", reasons.first.inner_text())
    expect(page.get_by_role("heading", name="Your rights")).to_be_visible()
    accessible(page, "subject-2-decision")

    page.get_by_label("A person reviews the decision").check()
    page.get_by_label("Why (in your own words)").fill("I have a new job since March.")
    page.get_by_role("button", name="Send the request").click()
    expect(page.get_by_role("status")).to_contain_text("Your request was received")
    row = page.locator("#requests tbody tr").first
    expect(row).to_contain_text("pending")
    assert re.search(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC", row.locator("td").nth(3).inner_text())
    accessible(page, "subject-3-review-requested")

    # The same page in Chinese, and on a phone-sized screen.
    page.get_by_role("link", name="中文").click()
    expect(page.locator("#outcome")).to_have_text({"declined": "拒绝",
                                                   "approved": "批准"}[outcome])
    expect(page.get_by_role("heading", name="您的权利")).to_be_visible()
    page.set_viewport_size(PHONE)
    assert _fits_width(page)
    accessible(page, "subject-4-zh-phone")

    store = console.store()
    try:
        reviews = store.reviews_of(console.server.decisions["alice"])
        accesses = store.accesses_of(console.server.decisions["alice"])
    finally:
        store.close()
    assert [(r["status"], r["channel"], r["requested_by"]) for r in reviews] == [
        ("pending", "console", "alice")]
    # Every view of the decision wrote the API's access event.
    views = [a for a in accesses if a["purpose"] == "subject view" and a["actor"] == "alice"]
    assert len(views) >= 3 and {a["role"] for a in views} == {"subject"}


def test_subject_editing_the_url_to_anothers_decision_gets_not_found(
        page: Page, console: Console) -> None:
    sign_in(page, console, "alice")
    other = console.server.decisions["bob"]
    response = page.goto(f"{console.url}/console/my/{other}")
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", level=1)).to_have_text("Not found")
    assert "DEMO-BOB" not in page.content()
    # The same answer as an id that does not exist at all.
    unknown = page.goto(f"{console.url}/console/my/00000000-0000-4000-8000-000000000000")
    assert unknown is not None and unknown.status == 404
    accessible(page, "subject-5-not-found")


def test_reviewer_works_the_queue_claims_and_decides(page: Page, console: Console) -> None:
    sign_in(page, console, "rita-reviewer")
    assert page.url.endswith("/console/reviews")
    accessible(page, "reviewer-1-queue")
    queue = page.locator("#queue tbody tr")
    dues = [queue.nth(i).locator("td").first.inner_text()[:20] for i in range(queue.count())]
    assert dues == sorted(dues)  # earliest due first
    page.goto(f"{console.url}/console/reviews/{console.review_id}")
    expect(page.get_by_text("My income has risen.")).to_be_visible()
    # The full report with its reason chart and attribution heat table.
    expect(page.get_by_role("img", name=re.compile("bar chart of the largest"))).to_be_visible()
    expect(page.get_by_role("heading", name="10. Reliability")).to_be_visible()
    page.get_by_role("button", name="Claim this request").click()
    expect(page.get_by_role("status")).to_contain_text("You hold this request now")
    accessible(page, "reviewer-2-claimed")
    page.get_by_label("Override it (a different outcome)").check()
    page.get_by_label("Rationale (recorded in the audit log)").fill(
        "Payslips show the income the model did not see.")
    page.get_by_role("button", name="Record the decision").click()
    expect(page.get_by_role("status")).to_contain_text("The review is decided")
    accessible(page, "reviewer-3-decided")

    store = console.store()
    try:
        review = store.review(console.review_id)
        accesses = store.accesses_of(console.server.decisions["bob"])
        facets, _, _ = store.search_decisions(DecisionFilter(review_status="overridden"))
    finally:
        store.close()
    assert (review["status"], review["reviewer"]) == ("overridden", "rita-reviewer")
    assert [s["action"] for s in review["steps"]] == ["claimed"]
    assert any(a["actor"] == "rita-reviewer" and a["action"] == "read"
               and a["purpose"] == "review" for a in accesses)
    assert console.server.decisions["bob"] in [f["decision_id"] for f in facets]


def test_compliance_searches_reads_downloads_and_acknowledges(
        page: Page, context: BrowserContext, console: Console) -> None:
    sign_in(page, console, "carl-compliance", "/console/decisions")
    assert page.url.endswith("/console/decisions")  # back where the sign-in began
    accessible(page, "compliance-1-decisions")
    page.get_by_label("Model").select_option("credit@3")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("#row-count")).to_contain_text("of 2")
    page.get_by_label("Outcome").select_option("bad")
    page.get_by_role("button", name="Apply").click()
    rows = page.locator("#decisions tbody tr")
    assert rows.count() >= 1
    for i in range(rows.count()):
        expect(rows.nth(i)).to_contain_text("declined")
    page.goto(f"{console.url}/console/decisions?since=2001-01-01&until=2001-12-31")
    expect(page.get_by_text("No decision matches.")).to_be_visible()

    page.goto(f"{console.url}/console/decisions")
    page.get_by_role("link", name="DEMO-ALICE").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Decision report")
    expect(page.get_by_role("heading", name="17. Integrity receipt")).to_be_visible()
    accessible(page, "compliance-2-report")
    with page.expect_download() as pdf:
        page.get_by_role("link", name="PDF").click()
    assert pdf.value.path().read_bytes()[:5] == b"%PDF-"
    with page.expect_download() as js:
        page.get_by_role("link", name="JSON (canonical)").click()
    report = json.loads(js.value.path().read_text())
    assert report["decision"]["decision_id"] == console.server.decisions["alice"]
    carl = [(a["action"], a["purpose"]) for a in report["access_log"]
            if a["actor"] == "carl-compliance"]
    assert ("read", "compliance review") in carl and ("export", "export") in carl

    page.get_by_role("link", name="Alerts").click()
    accessible(page, "compliance-3-alerts")
    page.get_by_role("button", name=re.compile("Acknowledge")).first.click()
    expect(page.get_by_role("status")).to_contain_text("The alert is acknowledged")
    expect(page.locator("#alerts")).to_contain_text("Acknowledged by carl-compliance")

    page.get_by_role("link", name="Drift and fairness").click()
    expect(page.locator("#fairness-chart")).to_be_visible()
    accessible(page, "compliance-4-monitoring")


def test_auditor_checks_receipts_consistency_and_the_whole_log(
        page: Page, console: Console, tmp_path: object) -> None:
    from pathlib import Path

    folder = Path(str(tmp_path))
    sign_in(page, console, "aude-auditor", "/console/audit")
    expect(page.locator("#checkpoint")).to_contain_text("test.example/service")
    accessible(page, "auditor-1-audit-log")

    good = folder / "receipt.json"
    good.write_text(json.dumps(console.receipt))
    page.get_by_label("Receipt file (JSON)").set_input_files(str(good))
    page.get_by_role("button", name="Check it").click()
    expect(page.locator("#receipt-result")).to_contain_text("The receipt is valid")
    tampered = dict(console.receipt)
    tampered["leaf_index"] = console.receipt["leaf_index"] + 1
    bad = folder / "tampered.json"
    bad.write_text(json.dumps(tampered))
    page.get_by_label("Receipt file (JSON)").set_input_files(str(bad))
    page.get_by_role("button", name="Check it").click()
    expect(page.locator("#receipt-result")).to_contain_text("does not verify")
    shot(page, "auditor-2-tampered-receipt")

    page.get_by_role("button", name="Prove and check").click()
    expect(page.locator("#consistency-result")).to_contain_text("Consistent")
    accessible(page, "auditor-3-consistency")

    page.get_by_role("button", name="Verify the whole log").click()
    expect(page.locator("#verify-passed")).to_be_visible(timeout=60_000)
    expect(page.locator("#verify-passed")).to_contain_text("entries")
    assert page.locator("#progress").get_attribute("max") == \
        page.locator("#progress").evaluate("p => String(p.value)")
    accessible(page, "auditor-4-verified")


def test_operator_sees_models_and_success_rate(page: Page, console: Console) -> None:
    sign_in(page, console, "olivia-operator")
    assert page.url.endswith("/console/models")
    store = console.store()
    try:
        fingerprints = {m["key"]: m["fingerprint"] for m in store.models()}
    finally:
        store.close()
    for key, fingerprint in fingerprints.items():
        expect(page.get_by_role("heading", name=key)).to_be_visible()
        expect(page.get_by_text(fingerprint)).to_be_visible()
    expect(page.locator("#success-rate")).to_contain_text("100.00% of")
    accessible(page, "operator-1-models")
    page.set_viewport_size(PHONE)
    assert _fits_width(page)
    shot(page, "operator-2-phone")
    # The operator's navigation has no report pages, and they are refused.
    assert page.get_by_role("link", name="Decisions").count() == 0
    response = page.goto(f"{console.url}/console/decisions")
    assert response is not None and response.status == 403


def test_signed_out_visitor_is_sent_to_sign_in_and_sign_out_ends_the_session(
        page: Page, context: BrowserContext, console: Console) -> None:
    for path in ("/console/", "/console/decisions?model=credit%403", "/console/audit",
                 f"/console/my/{console.server.decisions['alice']}"):
        page.goto(console.url + path)
        assert "/console/sign-in?next=" in page.url
        expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    accessible(page, "signed-out-1-sign-in")
    page.get_by_label("API key").fill("xai_notakey")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("unknown or revoked")

    sign_in(page, console, "aude-auditor")
    cookie = next(c for c in context.cookies() if c["name"] == "xai_console")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status")).to_contain_text("You are signed out")
    # The old cookie no longer opens anything, even if a copy was kept.
    context.add_cookies([{**cookie}])  # type: ignore[list-item]
    page.goto(f"{console.url}/console/audit")
    assert "/console/sign-in" in page.url


def test_form_posted_without_its_csrf_token_is_refused(page: Page, console: Console) -> None:
    sign_in(page, console, "bob")
    page.goto(f"{console.url}/console/my/{console.server.decisions['bob']}")
    page.get_by_label("Why (in your own words)").fill("Please look again.")
    page.evaluate("document.querySelectorAll('form input[name=csrf]')"
                  ".forEach(i => i.remove())")
    page.get_by_role("button", name="Send the request").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Not allowed")
    expect(page.get_by_role("alert")).to_contain_text("csrf")
    shot(page, "csrf-refused")
    store = console.store()
    try:
        kinds = [r["channel"] for r in store.reviews_of(console.server.decisions["bob"])]
    finally:
        store.close()
    assert "console" not in kinds  # nothing was recorded


def test_keyboard_alone_reaches_the_content_and_every_control(page: Page,
                                                               console: Console) -> None:
    sign_in(page, console, "carl-compliance", "/console/decisions")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to the content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    # Tab order reaches the filters and the table's links, each with a visible focus ring.
    seen = set()
    for _ in range(60):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement === document.body"):
            break  # past the last control
        seen.add(page.evaluate("document.activeElement.id || "
                               "document.activeElement.tagName"))
        outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert outline != "none", page.evaluate("document.activeElement.outerHTML")
    assert {"f-model", "f-since", "f-outcome", "A"} <= seen
