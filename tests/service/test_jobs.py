"""Explanation jobs: kept in the database, worked by the in-process pool, re-queued after
a restart, never lost and never completed twice; on SQLite and on PostgreSQL."""

from __future__ import annotations

import re
import time

import pytest

from liveserver import make_settings, prepared, wait_done
from xai_sandbox.demos.credit import credit_models
from xai_sandbox.service.demo import DEMO_MODELS
from xai_sandbox.store import Store
from xai_sandbox.store import tables as t
from xai_sandbox.store.jobs import JobLostError, JobQueue
from xai_sandbox.workflows import REPORT_SCHEMA, Decider

ROWS = credit_models().data.rows


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request, tmp_path):
    url = request.getfixturevalue("postgres").new_database() \
        if request.param == "postgresql" else None
    return make_settings(tmp_path, url)


def test_expensive_methods_run_as_a_job_and_answer_202(settings):
    server = prepared(settings).start()
    try:
        with server.client("olivia-operator") as c:
            r = c.post("/v1/decisions", json={"model_id": "credit-mlp", "subject_id": "a-1",
                                              "features": ROWS[1]})
        assert r.status_code == 202, r.text
        body = r.json()
        assert body["explanation"]["status"] == "queued"
        job = wait_done(server, body["explanation"]["job_url"])
        assert job["status"] == "done", job
        with server.client("carl-compliance") as c:
            report = c.get(job["report_url"]).json()
        # The subject view's plain-SQL read on this backend too.
        with server.client("alice") as c:
            view = c.get(f"/v1/decisions/{server.decisions['alice']}").json()
            other = c.get(f"/v1/decisions/{server.decisions['bob']}")
    finally:
        server.stop()
    assert view["explanation_status"] == "ready" and view["reasons"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", view["decided_at"])
    assert other.status_code == 404
    assert [e["method"] for e in report["explanations"]] == ["exact_shapley",
                                                             "integrated_gradients"]
    assert report["explanations"][0]["completeness_error"] < 1e-6


def test_jobs_survive_a_restart_and_complete_once(settings):
    # A service that takes decisions but runs no worker: the jobs wait in the database.
    first = prepared(settings).start(start_workers=False)
    try:
        with first.client("olivia-operator") as c:
            jobs = [c.post("/v1/decisions", json={"model_id": "credit-mlp",
                                                  "subject_id": f"r-{i}",
                                                  "features": ROWS[i]}).json()
                    for i in range(3)]
        with first.client("olivia-operator") as c:
            assert {c.get(j["explanation"]["job_url"]).json()["status"] for j in jobs} == {
                "queued"}
    finally:
        first.stop()
    second = prepared(settings)
    second.start()
    try:
        done = [wait_done(second, j["explanation"]["job_url"].replace(first.url, second.url))
                for j in jobs]
    finally:
        second.stop()
    assert {d["status"] for d in done} == {"done"}
    store = Store(settings)
    try:
        with store.engine.connect() as conn:
            reports = conn.execute(t.reports.select()).mappings().all()
        per_decision = {}
        for r in reports:
            per_decision[r["decision_id"]] = per_decision.get(r["decision_id"], 0) + 1
        assert all(per_decision[j["decision_id"]] == 1 for j in jobs)
    finally:
        store.close()


def test_a_job_whose_lease_ran_out_is_taken_over_and_the_old_holder_cannot_complete(settings):
    store = Store(settings)
    try:
        decider = Decider(store)
        decider.register(DEMO_MODELS[1])
        out = decider.decide(model_id="credit-mlp", subject_id="lease", features=ROWS[1])
        queue = JobQueue(store, lease_seconds=0.2)
        stale = queue.claim(out.job_id)
        assert stale is not None and queue.claim(out.job_id) is None  # held
        time.sleep(0.3)
        fresh = queue.claim(out.job_id)
        assert fresh is not None and fresh.attempts == 2
        assert not queue.renew(stale)
        report = decider.explain_decision(out.decision_id, fresh.methods)
        with pytest.raises(JobLostError):
            queue.complete(stale, report, REPORT_SCHEMA)
        queue.complete(fresh, report, REPORT_SCHEMA)
        with pytest.raises(JobLostError):
            queue.complete(fresh, report, REPORT_SCHEMA)
        assert queue.get(out.job_id)["status"] == "done"
        with store.engine.connect() as conn:
            n = conn.execute(t.reports.select().where(
                t.reports.c.decision_id == out.decision_id)).all()
        assert len(n) == 1
        from xai_sandbox.store.verify import verify_log

        assert verify_log(store.engine, store.keys.verifiers(), store.log.origin).ok
    finally:
        store.close()


def test_a_failing_job_is_retried_then_marked_failed(settings):
    store = Store(settings)
    try:
        decider = Decider(store)
        decider.register(DEMO_MODELS[1])
        out = decider.decide(model_id="credit-mlp", subject_id="erased", features=ROWS[2])
        store.erase_subject("erased")  # the input is gone: the explanation cannot run
        queue = JobQueue(store, lease_seconds=5, max_attempts=2)
        decider.jobs = queue
        for _ in range(2):
            job = queue.claim(out.job_id)
            assert job is not None and decider.run_job(job) is None
        row = queue.get(out.job_id)
        assert row["status"] == "failed" and "erased" in row["error"]
    finally:
        store.close()
