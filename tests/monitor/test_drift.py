"""Explanation drift: caught on a planted population shift, silent over many windows of the
same population at the default thresholds, and read from the store by time window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import update

from xai_sandbox.demos.credit import credit_models
from xai_sandbox.explainers import explain
from xai_sandbox.monitor.alerts import list_alerts
from xai_sandbox.monitor.drift import (
    compare_windows,
    drift_check,
    psi,
    run_checks,
    success_rates,
)
from xai_sandbox.service.demo import DEMO_MODELS
from xai_sandbox.settings import Settings
from xai_sandbox.store import Store
from xai_sandbox.store import tables as t
from xai_sandbox.workflows import Decider

CREDIT = credit_models()
NAMES = CREDIT.data.schema.names


def _attributions(rows):
    X = CREDIT.data.schema.encode(rows)
    e = explain(CREDIT.lightgbm, X, method="tree_shap", target="bad")
    return {n: e.values[:, j] for j, n in enumerate(NAMES)}


def test_psi_is_zero_for_the_same_sample_and_large_for_a_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=5000)
    assert psi(a, a) == pytest.approx(0.0, abs=1e-12)
    assert psi(a, rng.normal(size=5000)) < 0.02
    assert psi(a, rng.normal(loc=1.0, size=5000)) > 0.25


def test_a_shifted_population_is_caught():
    rows = CREDIT.data.rows
    rng = np.random.default_rng(1)
    before = [rows[i] for i in rng.choice(len(rows), 300, replace=False)]
    after = [dict(r, duration=min(120, r["duration"] + 24),
                  credit_amount=min(1_000_000, r["credit_amount"] * 2.5))
             for r in (rows[i] for i in rng.choice(len(rows), 300, replace=False))]
    result = {f.feature: f for f in compare_windows(_attributions(before),
                                                    _attributions(after))}
    assert result["duration"].drifted and result["credit_amount"].drifted
    assert result["duration"].psi > 0.25 and result["duration"].ks_pvalue < 1e-6


def test_no_false_alarm_over_many_windows_of_the_same_population():
    values = _attributions(CREDIT.data.rows)
    rng = np.random.default_rng(2)
    alarms = []
    for _ in range(40):
        idx = rng.permutation(len(CREDIT.data.rows))
        a, b = idx[:300], idx[300:600]
        alarms += [f.feature for f in compare_windows({n: v[a] for n, v in values.items()},
                                                      {n: v[b] for n, v in values.items()})
                   if f.drifted]
    assert alarms == []


def test_drift_check_reads_two_windows_from_the_store(tmp_path):
    store = Store(Settings(data_dir=tmp_path, log_origin="test.example/drift"))
    try:
        decider = Decider(store)
        decider.register(DEMO_MODELS[0])
        rows = CREDIT.data.rows
        old = [decider.decide(model_id="credit", subject_id=f"o{i}", features=rows[i])
               for i in range(40)]
        new = [decider.decide(model_id="credit", subject_id=f"n{i}",
                              features=dict(rows[i], duration=min(120, rows[i]["duration"]
                                                                  + 24)))
               for i in range(40, 80)]
        with store.writer.begin() as conn:  # the first 40 were explained 8 days ago
            conn.execute(update(t.reports).where(
                t.reports.c.decision_id.in_([o.decision_id for o in old])).values(
                created_at=datetime.now(UTC) - timedelta(days=8)))
        report = drift_check(store, "credit@3", min_reports=30)
        assert report.n_previous == 40 and report.n_current == len(new)
        assert "duration" in report.drifted
        assert drift_check(store, "credit@3", min_reports=50).features == ()
        rates = success_rates(store)
        assert rates and all(r["success_rate"] == 1.0 and not r["alert"] for r in rates)
        first = run_checks(store, min_reports=30)
        assert first["alerts_raised"]
        kinds = {a["body"]["feature"] for a in list_alerts(store)
                 if a["kind"] == "explanation_drift"}
        assert "duration" in kinds
        assert run_checks(store, min_reports=30)["alerts_raised"] == []  # still open
    finally:
        store.close()


def test_monitor_cli_runs_once(tmp_path):
    import json
    import os
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "xai_sandbox.cli", "monitor", "run"],
                         env={**os.environ, "XAI_SANDBOX_DATA_DIR": str(tmp_path)},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"drift": [], "success_rates": [], "alerts_raised": []}


def test_the_latest_drift_run_is_exported_at_metrics(tmp_path):
    from liveserver import make_settings, prepared

    server = prepared(make_settings(tmp_path)).start()
    try:
        store = Store(server.settings)
        try:
            decider = Decider(store)
            decider.load_registered()
            rows = CREDIT.data.rows
            old = [decider.decide(model_id="credit", subject_id=f"o{i}",
                                  features=rows[i]).decision_id for i in range(40)]
            for i in range(40, 80):
                decider.decide(model_id="credit", subject_id=f"n{i}",
                               features=dict(rows[i], duration=min(120,
                                                                   rows[i]["duration"] + 24)))
            with store.writer.begin() as conn:
                conn.execute(update(t.reports).where(t.reports.c.decision_id.in_(old))
                             .values(created_at=datetime.now(UTC) - timedelta(days=8)))
            run_checks(store, min_reports=30)
        finally:
            store.close()
        with server.client("olivia-operator") as c:
            text = c.get("/metrics").text
    finally:
        server.stop()
    assert 'xai_drift_alert{feature="duration",model="credit@3"} 1.0' in text
    assert 'xai_drift_psi{feature="duration",model="credit@3"}' in text
    assert 'xai_alerts_open{kind="explanation_drift"}' in text
