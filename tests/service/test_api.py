"""The REST service end to end, over real HTTP on loopback and a real SQLite store."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import time
import uuid
from datetime import UTC, datetime

import pytest

from xai_sandbox.audit.log import Receipt, check_receipt
from xai_sandbox.audit.merkle import verify_consistency, verify_inclusion
from xai_sandbox.audit.notes import parse_checkpoint, parse_verifier, verify_note
from xai_sandbox.demos.credit import credit_models
from xai_sandbox.workflows import add_working_days

ROWS = credit_models().data.rows
SCHEMA = credit_models().data.schema
COMPLIANCE_FIELDS = ("decision", "parties", "model", "input", "output", "explanations",
                     "reasons", "counterfactuals", "reliability", "human_review", "requests",
                     "notices", "access_log", "retention", "regimes", "receipt",
                     "subject_text", "provenance")


def _pdf_text(pdf: bytes) -> bytes:
    """The PDF's bytes with its compressed streams inflated (font names live in them)."""
    import zlib

    out = [pdf]
    for m in re.finditer(rb"stream\r?\n(.*?)endstream", pdf, re.S):
        with contextlib.suppress(zlib.error):
            out.append(zlib.decompress(m.group(1)))
    return b"".join(out)


def _verifiers(live):
    with live.client() as c:
        cp = c.get("/v1/audit/checkpoint").json()
    return [parse_verifier(k) for k in cp["verifier_keys"]]


def _subject(live, name: str, subject_id: str) -> str:
    """A subject principal with a key, made through the accounts of the live store."""
    from xai_sandbox.store import Store
    from xai_sandbox.store.accounts import Accounts

    store = Store(live.settings)
    try:
        accounts = Accounts(store.engine, store.writer)
        accounts.create_principal(name, ["subject"], subject_ref=store.subject_ref(subject_id))
        return accounts.issue_key(name)
    finally:
        store.close()


def _decide(live, subject_id: str, row: dict, model: str = "credit", **extra):
    with live.client("olivia-operator") as c:
        return c.post("/v1/decisions", json={"model_id": model, "subject_id": subject_id,
                                             "features": row, **extra})


def _declined_row() -> dict:
    m = credit_models()
    probs = m.lightgbm.adapter.predict(m.data.X)
    bad = m.lightgbm.class_index("bad")
    index = next(i for i in range(len(ROWS)) if probs[i, bad] > 0.7)
    return ROWS[index]


# ---------------------------------------------------------------------- authentication
def test_health_is_public_and_everything_else_needs_a_key(live):
    with live.client() as c:
        assert c.get("/health").json()["status"] == "ok"
        for method, path in [("GET", "/v1/models"), ("POST", "/v1/decisions"),
                             ("GET", "/v1/decisions"), ("GET", "/v1/reviews"),
                             ("GET", "/metrics"), ("GET", "/v1/audit/entries"),
                             ("POST", "/v1/explain")]:
            r = c.request(method, path, json={})
            assert r.status_code == 401, (path, r.text)
            assert r.headers["www-authenticate"] == "Bearer"
    with live.client("xai_000000000000_" + "A" * 43) as c:
        assert c.get("/v1/models").status_code == 401


def test_roles_are_enforced(live):
    with live.client("alice") as c:
        assert c.get("/v1/models").status_code == 403
        assert c.post("/v1/decisions", json={"model_id": "credit", "subject_id": "a",
                                             "features": ROWS[0]}).status_code == 403
        assert c.get("/v1/reviews").status_code == 403
    with live.client("rita-reviewer") as c:
        r = c.post("/v1/decisions", json={"model_id": "credit", "subject_id": "a",
                                          "features": ROWS[0]})
        assert r.status_code == 403 and "operator" in r.json()["detail"]


def test_keys_are_stored_hashed_and_revocable(live):
    from xai_sandbox.store import Store
    from xai_sandbox.store import tables as t
    from xai_sandbox.store.accounts import Accounts

    key = _subject(live, "revoke-me", "applicant-revoke")
    key_id, secret = key.split("_")[1], key.split("_", 2)[2]
    store = Store(live.settings)
    try:
        with store.engine.connect() as conn:
            stored = conn.execute(t.api_keys.select()).mappings().all()
        assert all(secret not in json.dumps({k: str(v) for k, v in r.items()}) for r in stored)
        with live.client(key) as c:
            assert c.get("/v1/decisions").status_code == 200
        Accounts(store.engine, store.writer).revoke_key(key_id)
    finally:
        store.close()
    # The service may remember a good key for key_cache_seconds, never longer.
    time.sleep(live.settings.key_cache_seconds + 0.1)
    with live.client(key) as c:
        assert c.get("/v1/decisions").status_code == 401


# ---------------------------------------------------------------------- decisions
def test_decision_is_scored_recorded_explained_and_its_receipt_verifies(live):
    r = _decide(live, "applicant-rx", _declined_row(), case_ref="APP-RX-1")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["case_ref"] == "APP-RX-1"
    assert body["output"]["decision"] == "bad" and body["output"]["adverse"] is True
    assert body["explanation"]["status"] == "ready"
    receipt = Receipt.from_dict(body["receipt"])
    checked = check_receipt(receipt, _verifiers(live))
    assert checked["decision_id"] == body["decision_id"]
    # The log holds a commitment, never the applicant's values.
    entry = json.loads(receipt.entry)
    assert "features" not in entry and str(ROWS[0]["credit_amount"]) not in receipt.entry.decode()


def test_subject_view_reasons_are_plain_ranked_and_directional(live):
    key = _subject(live, "sv-subject", "applicant-sv")
    decision = _decide(live, "applicant-sv", _declined_row()).json()["decision_id"]
    with live.client(key) as c:
        en = c.get(f"/v1/decisions/{decision}").json()
        zh = c.get(f"/v1/decisions/{decision}", headers={"Accept-Language": "zh-CN,zh"}).json()
        zh2 = c.get(f"/v1/decisions/{decision}", params={"lang": "zh"}).json()
        assert c.get(f"/v1/decisions/{decision}", params={"lang": "fr"}).status_code == 422
    assert en["outcome"] == "declined" and zh["outcome"] == "拒绝" == zh2["outcome"]
    assert 1 <= len(en["reasons"]) <= 4
    assert [r["rank"] for r in en["reasons"]] == list(range(1, len(en["reasons"]) + 1))
    assert {r["impact"] for r in en["reasons"]} <= {"HIGH", "MEDIUM", "LOW"}
    # No raw attribution numbers; the impact level in the reader's language.
    assert set(en["reasons"][0]) == {"rank", "impact", "impact_text", "text"}
    impact = {"en": {"HIGH": "high impact", "MEDIUM": "medium impact", "LOW": "low impact"},
              "zh": {"HIGH": "影响大", "MEDIUM": "影响中等", "LOW": "影响小"}}
    for view, loc in ((en, "en"), (zh, "zh")):
        assert all(r["impact_text"] == impact[loc][r["impact"]] for r in view["reasons"])
    # Nothing of the Chinese view is left in English: sources, deployer, caveat.
    assert zh["data_sources"] == ["申请表", "本行账户记录"]
    assert zh["deployer"]["name"] == "示例银行股份公司（演示部署方）"
    assert en["data_sources"] == ["application form", "bank's own account records"]
    for text in (zh["caveat"], *(r["text"] for r in zh["rights"])):
        assert not re.search(r"[A-Za-z]{4,}", text), text
    for reason in en["reasons"]:
        assert 'pushed the decision toward "declined"' in reason["text"]
    assert all("使决定倾向于“拒绝”" in r["text"] for r in zh["reasons"])
    # Which way and why: the side of the typical applicant the value lies on.
    assert any(re.search(r"(higher|lower) than for a typical applicant", r["text"])
               for r in en["reasons"])
    change = en["what_you_could_change"]
    assert change["disclaimer"].startswith("These are examples") and "not a promise" in \
        change["disclaimer"]
    assert {r["right"] for r in en["rights"]} == {"human_review", "contest", "explanation"}
    assert en["rights"][0]["link"].endswith(f"/v1/decisions/{decision}/reviews")
    assert en["review_status"] == "not_required"
    # Protected features are never given as reasons.
    protected = [SCHEMA.display_name(f.name) for f in SCHEMA.features if f.protected]
    assert not any(p in r["text"] for p in protected for r in en["reasons"])


def test_a_subject_sees_only_their_own_decisions(live):
    alice = live.decisions["alice"]
    with live.client("bob") as c:
        mine = c.get("/v1/decisions").json()
        assert [d["decision_id"] for d in mine] == [live.decisions["bob"]]
        other = c.get(f"/v1/decisions/{alice}")
        unknown = c.get("/v1/decisions/00000000-0000-4000-8000-000000000000")
        assert other.status_code == unknown.status_code == 404
        assert other.json()["detail"].split(";")[0] == unknown.json()["detail"].split(";")[0]
        assert c.post(f"/v1/decisions/{alice}/reviews",
                      json={"reason": "not mine"}).status_code == 404
        assert c.get(f"/v1/decisions/{alice}/report").status_code == 403


def test_full_report_carries_every_compliance_field_in_json_html_and_pdf(live):
    decision = live.decisions["alice"]
    with live.client("carl-compliance") as c:
        report = c.get(f"/v1/decisions/{decision}/report",
                       params={"purpose": "complaint 17"}).json()
        html = c.get(f"/v1/decisions/{decision}/report.html")
        pdf = c.get(f"/v1/decisions/{decision}/report.pdf")
    for name in COMPLIANCE_FIELDS:
        assert name in report, name
    assert report["schema_version"] == "xai-sandbox.report/1"
    assert report["parties"]["deployer"]["name"] and report["parties"]["provider"]["contact"]
    assert len(report["model"]["fingerprint_sha256"]) == 64
    assert report["model"]["validation_status"]
    assert len(report["input"]["commitment"]) == 64
    assert {"score", "decision", "threshold", "policy_version", "automation"} <= set(
        report["output"])
    tree = report["explanations"][0]
    assert tree["method"] == "tree_shap" and tree["library_versions"]["shap"]
    assert tree["completeness_error"] < 1e-6
    reasons = report["reasons"]["reasons"]
    assert len(reasons) <= 4 and all(r["reason_code"] and r["contribution"] > 0 for r in reasons)
    assert all(re.fullmatch(r"C1-\d\d", r["reason_code"]) for r in reasons)
    assert report["decision"]["decided_at"].endswith("Z") and report["decision"]["logged_at"]
    assert report["retention"]["retain_until"] and report["retention"]["legal_bases"]
    assert report["notices"]["adverse_action_notice"]["content_sha256"]["en"]["sha256"]
    assert set(report["subject_text"]) == {"en", "zh"}
    assert [p["step"] for p in report["provenance"]] == [
        "input", "layer activations", "gradient weighting", "anchor match",
        "regulatory rule", "hash"]
    # Semantic anchors: the table region or feature | sensitivity | anchor | regulation.
    matches = report["anchors"]["matches"]
    assert report["anchors"]["library"] == "german-credit-anchors/1"
    # Disjoint anchors share at most the whole attribution (some features have none).
    assert 0.5 < sum(m["sensitivity"] for m in matches
                     if m["anchor"] != "protected-over-merit") <= 1 + 1e-9
    assert all(m["regulations"] and 0 <= m["risk"] <= 1 for m in matches)
    assert "HIT" in report["provenance"][3]["detail"] or "risk" in report["provenance"][3][
        "detail"]
    assert 0 <= report["fairness"]["protected_share"] <= 1
    assert set(report["fairness"]["by_feature"]) == {"personal_status_sex", "age",
                                                     "foreign_worker"}
    # Likely proxies, found in the training data at registration, and their share.
    assert "duration" in report["fairness"]["proxies"]["foreign_worker"]
    assert 0 < report["fairness"]["proxy_share"] <= 1
    # The read itself is in the access log the report shows.
    assert any(a["actor"] == "carl-compliance" and a["purpose"] == "complaint 17"
               for a in report["access_log"])
    assert check_receipt(Receipt.from_dict(report["receipt"]), _verifiers(live))
    assert html.status_code == 200 and "text/html" in html.headers["content-type"]
    for heading in ["1&ndash;3.", *[f"{n}." for n in range(4, 19)]]:
        assert f"<h2>{heading} " in html.text, heading
    assert 'src="data:image/png;base64,' in html.text
    assert "Semantic anchors and regulations" in html.text
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    # The Chinese reason texts are set in a CJK font (make test installs one).
    assert any(name in _pdf_text(pdf.content) for name in (b"WenQuanYi", b"CJK"))
    assert "attachment" in pdf.headers["content-disposition"]


def test_every_report_read_and_export_writes_an_access_event(live):
    decision = live.decisions["bob"]
    with live.client("aude-auditor") as c:
        before = c.get("/health").json()["log_size"]
        c.get(f"/v1/decisions/{decision}/report")
        c.get(f"/v1/decisions/{decision}/report.html")
        c.get(f"/v1/decisions/{decision}/report.pdf")
        after = c.get("/v1/audit/entries", params={"start": before}).json()["entries"]
    accessed = [e["body"] for e in after if e["kind"] == "record_accessed"
                and e["body"]["record_id"] == decision]
    assert [a["action"] for a in accessed] == ["read", "read", "export"]
    assert {a["actor"] for a in accessed} == {"aude-auditor"}
    assert {a["role"] for a in accessed} == {"auditor"}


def test_counterfactuals_flip_the_decision_and_respect_the_schema(live):
    decision = live.decisions["alice"]
    with live.client("carl-compliance") as c:
        cf = c.get(f"/v1/decisions/{decision}/report").json()["counterfactuals"]
    assert cf["requested"] and cf["options"]
    frozen = {f.name for f in SCHEMA.features if f.protected or not f.mutable}
    assert set(cf["constraints"]["never_changed"]) == frozen
    for option in cf["options"]:
        assert option["valid"] and option["rescored_decision"] == "good"
        assert not {c["feature"] for c in option["changes"]} & frozen
        for change in option["changes"]:
            spec = SCHEMA.feature(change["feature"])
            if spec.bounds is not None:
                assert spec.bounds[0] <= change["after"] <= spec.bounds[1]
            if spec.monotone == "increasing":  # more of it raises risk: only lowered
                assert change["after"] < change["before"]
    costs = [o["cost"] for o in cf["options"]]
    assert costs == sorted(costs)


def test_an_input_far_from_the_training_data_is_marked_unreliable(live):
    row = dict(_declined_row(), credit_amount=900_000, duration=120, age=99,
               existing_credits=4)
    key = _subject(live, "ood-subject", "applicant-ood")
    decision = _decide(live, "applicant-ood", row).json()["decision_id"]
    with live.client("carl-compliance") as c:
        reliability = c.get(f"/v1/decisions/{decision}/report").json()["reliability"]
    assert reliability["level"] == "low"
    assert reliability["out_of_distribution"]["out_of_distribution"] is True
    with live.client(key) as c:
        view = c.get(f"/v1/decisions/{decision}").json()
    assert view["caveat"].startswith("Explanation reliability low")
    typical = _decide(live, "applicant-ood", ROWS[0]).json()["decision_id"]
    with live.client(key) as c:
        assert c.get(f"/v1/decisions/{typical}").json()["reliability"] == "normal"


# ---------------------------------------------------------------------- reviews
def test_human_review_from_request_to_decision(live):
    key = _subject(live, "rev-subject", "applicant-rev")
    first = _decide(live, "applicant-rev", _declined_row()).json()["decision_id"]
    with live.client(key) as c:
        asked = c.post(f"/v1/decisions/{first}/reviews",
                       json={"reason": "My income has changed."})
        assert asked.status_code == 201, asked.text
        again = c.post(f"/v1/decisions/{first}/reviews", json={"reason": "again"})
        assert again.status_code == 409
        assert c.post(f"/v1/decisions/{first}/reviews", json={"reason": ""}).status_code == 422
    review = asked.json()
    due = datetime.fromisoformat(review["due_at"].replace("Z", "+00:00"))
    expected = add_working_days(datetime.now(UTC), 7)
    assert abs((due - expected).total_seconds()) < 120 and due.weekday() < 5

    with live.client("rita-reviewer") as c:
        queue = c.get("/v1/reviews").json()
        dues = [q["due_at"] for q in queue]
        assert dues == sorted(dues) and review["review_id"] in [q["review_id"] for q in queue]
        claimed = c.post(f"/v1/reviews/{review['review_id']}/claim")
        assert claimed.status_code == 200
        queue = c.get("/v1/reviews").json()
        mine = next(q for q in queue if q["review_id"] == review["review_id"])
        assert mine["claimed_by"] == "rita-reviewer"
    other = _staff(live, "rex-reviewer", ["reviewer"])
    with live.client(other) as c:
        assert c.post(f"/v1/reviews/{review['review_id']}/claim").status_code == 409
        assert c.post(f"/v1/reviews/{review['review_id']}/decision",
                      json={"outcome": "reversed", "rationale": "x"}).status_code == 409
    with live.client("rita-reviewer") as c:
        bad = c.post(f"/v1/reviews/{review['review_id']}/decision",
                     json={"outcome": "maybe", "rationale": "x"})
        assert bad.status_code == 422
        done = c.post(f"/v1/reviews/{review['review_id']}/decision",
                      json={"outcome": "overridden", "rationale": "Income verified."})
        assert done.status_code == 200 and done.json()["status"] == "overridden"
        assert c.post(f"/v1/reviews/{review['review_id']}/decision",
                      json={"outcome": "confirmed", "rationale": "x"}).status_code == 409
    with live.client(key) as c:
        view = c.get(f"/v1/decisions/{first}").json()
        status = c.get(f"/v1/reviews/{review['review_id']}").json()
    assert view["review_status"] == "overridden" and view["reviews"][0]["due_at"]
    assert status["status"] == "overridden" and "rationale" not in status
    # The person's decision is the outcome the subject now reads, with its date.
    assert view["outcome"] == "approved" and view["automated_outcome"] == "declined"
    assert view["outcome_decided_by"] == "person"
    assert view["outcome_decided_at"][:10] == view["reviews"][0]["decided_at"][:10]
    assert "by a person" in view["outcome_note"] and "declined" in view["outcome_note"]
    with live.client(key) as c:
        zh = c.get(f"/v1/decisions/{first}?lang=zh").json()
    assert zh["outcome"] == "批准" and "人工复核" in zh["outcome_note"]
    with live.client("carl-compliance") as c:
        report = c.get(f"/v1/decisions/{first}/report").json()
        html = c.get(f"/v1/decisions/{first}/report.html").text
    with live.client("carl-compliance") as c:
        odd = c.get(f"/v1/decisions/{first}/report.pdf", params={"purpose": "\U000f5e37x"})
    assert odd.status_code == 422 and "purpose" in odd.text and "U+F5E37" in odd.text
    # Every served explanation carries its quality block.
    assert all(b["quality"]["assessed"] and b["quality"]["checks"]["curves"]
               for b in report["explanations"])
    final = report["final_outcome"]
    assert final["decision"] == "good" and final["decided_by"] == "person"
    assert final["original"]["decision"] == report["output"]["decision"] == "bad"
    assert "decided by a person on review (overridden" in html
    # The log holds both: the automated decision and the review that changed it.
    logged: dict[str, str] = {}
    with live.client("carl-compliance") as c:
        start, size = 0, 1
        while start < size:
            page = c.get("/v1/audit/entries", params={"start": start}).json()
            logged.update({e["record_id"]: e["kind"] for e in page["entries"]})
            start, size = page["end"], page["size"]
    assert logged[f"decisions:{first}"] == "decision_recorded"
    assert logged[f"reviews:{review['review_id']}"] == "review_decided"
    history = report["human_review"]["history"][0]
    assert report["human_review"]["status"] == "overridden"
    assert history["reviewer"] == "rita-reviewer" and history["rationale"] == "Income verified."
    assert report["requests"][0]["kind"] == "human_review"


def _staff(live, name: str, roles: list[str]) -> str:
    from xai_sandbox.store import Store
    from xai_sandbox.store.accounts import Accounts

    store = Store(live.settings)
    try:
        accounts = Accounts(store.engine, store.writer)
        accounts.create_principal(name, roles)
        return accounts.issue_key(name)
    finally:
        store.close()


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize(("features", "loc"), [
    ({"age": 30}, ["body", "features", "checking_status"]),
    ({**ROWS[0], "checking_status": "A99"}, ["body", "features", "checking_status"]),
    ({**ROWS[0], "duration": 0}, ["body", "features", "duration"]),
    ({**ROWS[0], "shoe_size": 42}, ["body", "features"]),
])
def test_schema_violations_are_422_with_the_field(live, features, loc):
    r = _decide(live, "applicant-bad", features)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"][0]
    assert detail["loc"] == loc and detail["msg"]


def test_bad_requests_get_clear_4xx_never_500(live):
    with live.client("olivia-operator") as c:
        r = c.post("/v1/decisions", content=b"{not json",
                   headers={"content-type": "application/json"})
        assert r.status_code == 422
        r = c.post("/v1/decisions", json={"model_id": "nope", "subject_id": "a",
                                          "features": ROWS[0]})
        assert r.status_code == 404 and "model_id" in r.json()["detail"]
        r = c.post("/v1/decisions", json={"model_id": "credit", "features": ROWS[0]})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "subject_id"]
        big = {"model_id": "credit", "subject_id": "a", "features": {"x": "y" * 300_000}}
        assert c.post("/v1/decisions", json=big).status_code == 413

        def chunks():
            yield b'{"model_id": "credit", "subject_id": "a", "features": {"x": "'
            for _ in range(40):
                yield b"z" * 10_000
            yield b'"}}'

        assert c.post("/v1/decisions", content=chunks(),
                      headers={"content-type": "application/json"}).status_code == 413
        assert c.get("/v1/jobs/not-a-uuid").status_code == 422
        assert c.get("/v1/jobs/00000000-0000-4000-8000-000000000000").status_code == 404


# ---------------------------------------------------------------------- audit
def test_audit_endpoints_prove_inclusion_and_consistency(live):
    with live.client() as c:
        cp = c.get("/v1/audit/checkpoint").json()
    verifiers = [parse_verifier(k) for k in cp["verifier_keys"]]
    body, _ = verify_note(cp["checkpoint"], verifiers)
    old = parse_checkpoint(body)
    _decide(live, "applicant-audit", ROWS[2])
    with live.client("aude-auditor") as c:
        entries = c.get("/v1/audit/entries", params={"start": 0, "end": 3}).json()
        assert [e["index"] for e in entries["entries"]] == [0, 1, 2]
        assert entries["entries"][0]["kind"] == "model_registered"
        # A fresh checkpoint covers the new decision.
        new_size = c.get("/health").json()["log_size"]
        proof = c.get("/v1/audit/proofs/consistency",
                      params={"old": old.size, "new": new_size})
        assert proof.status_code == 200, proof.text
        leaf = entries["entries"][1]
        incl = c.get("/v1/audit/proofs/inclusion",
                     params={"index": 1, "size": old.size}).json()
        assert c.get("/v1/audit/proofs/inclusion",
                     params={"index": old.size, "size": old.size}).status_code == 422
    verify_inclusion(1, old.size, base64.b64decode(leaf["leaf_hash"]),
                     [base64.b64decode(p) for p in incl["proof"]], old.root)
    from xai_sandbox.store import Store

    store = Store(live.settings)
    try:
        new_root = store.log.root(new_size)
    finally:
        store.close()
    verify_consistency(old.size, new_size, old.root, new_root,
                       [base64.b64decode(p) for p in proof.json()["proof"]])
    with live.client("alice") as c:
        assert c.get("/v1/audit/entries").status_code == 403


def test_metrics_need_a_key_and_count_decisions(live):
    _decide(live, "applicant-metrics", ROWS[3])
    with live.client("olivia-operator") as c:
        text = c.get("/metrics").text
    assert re.search(r'xai_decisions_total\{model="credit@3",outcome="(good|bad)"\} \d', text)
    assert "xai_http_request_seconds_bucket" in text and 'xai_jobs{status="done"}' in text
    with live.client("alice") as c:
        assert c.get("/metrics").status_code == 403


# ---------------------------------------------------------------------- models, ad hoc
def test_register_an_xgboost_model_from_its_json_format_and_decide_with_it(live):
    import xgboost

    m = credit_models()
    est = xgboost.XGBClassifier(n_estimators=30, max_depth=3, random_state=0, n_jobs=1)
    est.fit(m.data.X[m.train], m.data.y[m.train])
    spec = {"model_id": "credit-xgb", "version": "1",
            "source": {"kind": "xgboost_json",
                       "model": bytes(est.get_booster().save_raw("json")).decode(),
                       "schema": SCHEMA.to_dict(), "class_names": ["good", "bad"],
                       "training_rows": [ROWS[i] for i in m.train[:300]]},
            "policy": {"methods": ["tree_shap"], "adverse_class": "bad",
                       "outcome_labels": {"bad": {"en": "declined", "zh": "拒绝"},
                                          "good": {"en": "approved", "zh": "批准"}}}}
    with live.client("olivia-operator") as c:
        r = c.post("/v1/models", json=spec)
        assert r.status_code == 201, r.text
        assert r.json()["source"] == "xgboost_json" and len(r.json()["fingerprint"]) == 64
        assert "credit-xgb@1" in [x["key"] for x in c.get("/v1/models").json()]
        bad = c.post("/v1/models", json={**spec, "version": "2",
                                         "source": {**spec["source"], "model": "{}"}})
        assert bad.status_code == 422 and "source.model" in json.dumps(bad.json())
        pol = c.post("/v1/models", json={**spec, "version": "3",
                                         "policy": {**spec["policy"], "methods": ["magic"]}})
        assert pol.status_code == 422
    decided = _decide(live, "applicant-xgb", _declined_row(), model="credit-xgb")
    assert decided.status_code == 201, decided.text
    expected = est.predict_proba(SCHEMA.encode(_declined_row()))[0, 1]
    assert decided.json()["output"]["score"] == pytest.approx(expected, rel=1e-5)


def test_adhoc_explanation_with_provenance_and_receipt(live):
    with live.client("olivia-operator") as c:
        r = c.post("/v1/explain", json={"model_id": "credit", "input": ROWS[5],
                                        "method": "tree_shap"})
        encoded = c.post("/v1/explain", json={"model_id": "credit",
                                              "input": SCHEMA.encode(ROWS[5])[0].tolist(),
                                              "method": "tree_shap"})
        wrong = c.post("/v1/explain", json={"model_id": "credit", "input": ROWS[5],
                                            "method": "integrated_gradients"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert [p["step"] for p in out["provenance"]][-1] == "hash"
    assert out["explanation"]["attributions"] == encoded.json()["explanation"]["attributions"]
    checked = check_receipt(Receipt.from_dict(out["receipt"]), _verifiers(live))
    assert checked["kind"] == "adhoc_explanation"
    assert {m["anchor"] for m in out["anchors"]} >= {"sex-and-marital-status", "debt-burden"}
    assert "sensitivity" in out["provenance"][3]["detail"]
    assert checked["explanation_sha256"] == out["explanation_sha256"]
    assert wrong.status_code == 422  # a gradient method on a tree model


def test_rate_limit_on_explanation_reads(tmp_path):
    from liveserver import make_settings, prepared

    server = prepared(make_settings(tmp_path, rate_limit_subject_per_minute=3)).start()
    try:
        with server.client("alice") as c:
            codes = [c.get(f"/v1/decisions/{server.decisions['alice']}") for _ in range(5)]
    finally:
        server.stop()
    assert [r.status_code for r in codes[:3]] == [200, 200, 200]
    assert codes[3].status_code == 429 and int(codes[3].headers["retry-after"]) >= 1


def test_a_below_confidence_policy_leaves_confident_approvals_unexplained(live):
    spec = {"model_id": "credit-doubt", "version": "1",
            "source": {"kind": "builtin", "name": "german-credit-lightgbm"},
            "policy": {"methods": ["tree_shap"], "adverse_class": "bad", "mode":
                       "below_confidence", "confidence_threshold": 0.6,
                       "outcome_labels": {"bad": {"en": "declined", "zh": "拒绝"},
                                          "good": {"en": "approved", "zh": "批准"}}}}
    with live.client("olivia-operator") as c:
        assert c.post("/v1/models", json=spec).status_code == 201
    m = credit_models()
    probs = m.lightgbm.adapter.predict(m.data.X)
    confident = next(i for i in range(len(ROWS)) if probs[i, 0] > 0.9)
    adverse = _declined_row()
    quiet = _decide(live, "applicant-doubt", ROWS[confident], model="credit-doubt").json()
    loud = _decide(live, "applicant-doubt", adverse, model="credit-doubt").json()
    assert quiet["explanation"]["status"] == "not_required"
    assert loud["explanation"]["status"] == "ready"  # adverse decisions always are


def test_an_explanation_below_the_quality_thresholds_is_withheld_and_reviewed(live):
    spec = {"model_id": "credit-strict", "version": "1",
            "source": {"kind": "builtin", "name": "german-credit-lightgbm"},
            "policy": {"methods": ["tree_shap"], "adverse_class": "bad",
                       "quality": {"min_gap": 5.0, "action": "withhold"},
                       "outcome_labels": {"bad": {"en": "declined", "zh": "拒绝"},
                                          "good": {"en": "approved", "zh": "批准"}}}}
    with live.client("olivia-operator") as c:
        assert c.post("/v1/models", json=spec).status_code == 201
        bad = c.post("/v1/models", json={**spec, "version": "2", "policy": {
            **spec["policy"], "quality": {"action": "hide"}}})
        assert bad.status_code == 422 and "quality.action" in bad.text
    key = _subject(live, "strict-subject", "applicant-strict")
    decision = _decide(live, "applicant-strict", _declined_row(),
                       model="credit-strict").json()["decision_id"]
    with live.client(key) as c:
        view = c.get(f"/v1/decisions/{decision}").json()
    assert view["reasons"] == [] and view["reliability"] == "withheld"
    assert "did not pass our reliability checks" in view["caveat"]
    assert view["review_status"] == "pending" and view["reviews"][0]["due_at"]
    with live.client("carl-compliance") as c:
        report = c.get(f"/v1/decisions/{decision}/report").json()
    assert report["quality"]["verdict"]["action"] == "withhold"
    assert report["reliability"]["shown"] is False
    with live.client("rita-reviewer") as c:
        queue = c.get("/v1/reviews", params={"limit": 200}).json()
    mine = [r for r in queue if r["decision_id"] == decision]
    assert len(mine) == 1 and mine[0]["requested_by"] == "system:explanation-quality"


def test_text_is_explained_with_words_anchors_and_a_receipt(live):
    text = ("I might be late with the payment because I lost my job, and the staff "
            "were rude about it.")
    from xai_sandbox.text.catalog import minilm_sentiment

    minilm_sentiment()   # trains the sentiment head once per session (cached on disk)
    with live.client("olivia-operator") as c:
        r = c.post("/v1/explain/text", json={"model_id": "minilm-sentiment", "text": text},
                   timeout=600)
        assert r.status_code == 200, r.text
        out = r.json()
        assert c.post("/v1/explain/text", json={"model_id": "minilm-sentiment", "text": text,
                                                "method": "magic"}).status_code == 422
        assert c.post("/v1/explain/text", json={"model_id": "nope",
                                                "text": text}).status_code == 404
        assert c.post("/v1/explain/text", json={"model_id": "minilm-sentiment",
                                                "text": ""}).status_code == 422
    assert set(out["prediction"]) == {"negative", "positive"}
    assert out["completeness_error"] <= 0.05
    assert [w["text"] for w in out["words"]][:3] == ["I", "might", "be"]
    anchors = {a["anchor"]: a for a in out["anchors"]}
    assert {"hedging", "vulnerability", "financial-difficulty"} <= set(anchors)
    assert anchors["vulnerability"]["sensitivity"] > 0 and anchors["hedging"]["sensitivity"] > 0
    assert "FCA FG21/1" in " ".join(anchors["vulnerability"]["regulations"])
    receipt = Receipt.from_dict(out["receipt"])
    assert check_receipt(receipt, _verifiers(live))
    key = _subject(live, "text-subject", "applicant-text")
    with live.client(key) as c:
        assert c.post("/v1/explain/text", json={"model_id": "minilm-sentiment",
                                                "text": text}).status_code == 403


def test_a_key_without_the_role_gets_403_for_any_body_not_the_schema(live):
    """The role is checked before the body is read: a key that may not post learns
    nothing of the body's schema from a 422."""
    cases = [("rita-reviewer", "/v1/decisions"), ("alice", "/v1/explain"),
             ("carl-compliance", "/v1/explain/text"), ("alice", "/v1/models"),
             ("olivia-operator", f"/v1/decisions/{live.decisions['alice']}/reviews"),
             ("alice", f"/v1/reviews/{uuid.uuid4()}/decision")]
    for who, path in cases:
        with live.client(who) as c:
            for body in ({}, {"model_id": 7}, []):
                r = c.post(path, json=body)
                assert r.status_code == 403, (who, path, body, r.status_code, r.text)
                assert "role:" in r.json()["detail"]
    with live.client("olivia-operator") as c:  # with the role, the body is checked
        assert c.post("/v1/decisions", json={}).status_code == 422


def test_answers_the_document_declares_for_bodies_methods_and_languages(live):
    """A body that is not UTF-8 is a 422 naming the rule (not an undocumented 400); a 405
    lists every method of the path; the document states what ``lang`` and a review's
    reason may be, and the service keeps to it."""
    from xai_sandbox.models.schema import LOCALES

    with live.client("olivia-operator") as c:
        r = c.post("/v1/decisions", content=b'{"model_id": "\xff\xfe"}',
                   headers={"Content-Type": "application/json"})
        assert r.status_code == 422, r.text
        assert "UTF-8" in str(r.json()["detail"])
        put = c.put("/v1/decisions")
        assert put.status_code == 405
        assert set(put.headers["allow"].split(", ")) >= {"GET", "POST"}
        doc = c.get("/openapi.json").json()
    view = doc["paths"]["/v1/decisions/{decision_id}"]["get"]["parameters"]
    lang = next(p for p in view if p["name"] == "lang")["schema"]["anyOf"][0]
    assert tuple(lang["enum"]) == tuple(LOCALES)
    reason = doc["components"]["schemas"]["ReviewRequest"]["properties"]["reason"]
    assert reason["pattern"] == r"\S"
    with live.client("alice") as c:
        decision = live.decisions["alice"]
        assert c.get(f"/v1/decisions/{decision}", params={"lang": ""}).status_code == 422
        blank = c.post(f"/v1/decisions/{decision}/reviews", json={"reason": "\n"})
        assert blank.status_code == 422
