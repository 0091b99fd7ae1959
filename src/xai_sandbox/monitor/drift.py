"""Explanation drift: has what the model relies on moved?

Per model and feature, this window's attributions (the first method of each stored
report) against the previous window's (default 7 days against the 7 before): the
population stability index (PSI, on the previous window's deciles) and the two-sample
Kolmogorov-Smirnov statistic of the attribution values, and the relative change of the mean
absolute attribution. A feature drifts when its mean absolute attribution moves by more
than 50 % (for features that carry at least 5 % of the attribution) or its PSI exceeds 0.25
(all configurable). The explanation success rate per hour
(reports over reports plus failed jobs) alerts below 95 %.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from scipy.stats import ks_2samp
from sqlalchemy import select

from xai_sandbox.errors import InvalidInputError
from xai_sandbox.store import tables as t
from xai_sandbox.store.store import Store

__all__ = ["DriftReport", "FeatureDrift", "compare_windows", "drift_check", "load_state",
           "psi", "run_checks", "save_state", "success_rates"]

_EPS = 1e-4


def psi(expected: np.ndarray, actual: np.ndarray, bins: int = 10) -> float:
    """Population stability index of ``actual`` against ``expected`` on ``expected``'s
    quantile bins (ties merged), with a small floor on empty bins."""
    expected = np.asarray(expected, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    if expected.size == 0 or actual.size == 0:
        raise InvalidInputError("expected", "both samples must be non-empty",
                                (expected.size, actual.size))
    edges = np.unique(np.quantile(expected, np.linspace(0, 1, bins + 1)[1:-1]))
    e = np.bincount(np.searchsorted(edges, expected, side="right"),
                    minlength=edges.size + 1) / expected.size
    a = np.bincount(np.searchsorted(edges, actual, side="right"),
                    minlength=edges.size + 1) / actual.size
    e, a = np.clip(e, _EPS, None), np.clip(a, _EPS, None)
    return float(np.sum((a - e) * np.log(a / e)))


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    psi: float
    ks: float
    ks_pvalue: float
    mean_abs_previous: float
    mean_abs_current: float
    change: float        # relative change of the mean absolute attribution
    drifted: bool

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class DriftReport:
    model: str
    previous: tuple[str | None, str | None]
    current: tuple[str | None, str | None]
    n_previous: int
    n_current: int
    features: tuple[FeatureDrift, ...] = field(default=())

    @property
    def drifted(self) -> list[str]:
        return [f.feature for f in self.features if f.drifted]

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "previous": list(self.previous),
                "current": list(self.current), "n_previous": self.n_previous,
                "n_current": self.n_current, "drifted": self.drifted,
                "features": [f.to_dict() for f in self.features]}


def compare_windows(previous: Mapping[str, Sequence[float]],
                    current: Mapping[str, Sequence[float]], *, mean_change: float = 0.5,
                    psi_limit: float = 0.25, min_share: float = 0.05) -> list[FeatureDrift]:
    """Per feature of both windows: PSI, KS and the change of mean |attribution|.

    The mean-change rule judges only material features: those carrying at least
    ``min_share`` of the total mean |attribution| in either window. A feature that carries
    1 % of it (a rare category) moves by half between two samples of the same population
    by chance alone."""
    names = sorted(set(previous) & set(current))
    totals = [sum(float(np.abs(np.asarray(w[n], dtype=np.float64)).mean())
                  for n in names if len(w[n])) for w in (previous, current)]
    out = []
    for name in names:
        p = np.asarray(previous[name], dtype=np.float64)
        c = np.asarray(current[name], dtype=np.float64)
        if p.size == 0 or c.size == 0:
            continue
        mp, mc = float(np.abs(p).mean()), float(np.abs(c).mean())
        change = (mc - mp) / mp if mp > 0 else (0.0 if mc == 0 else float("inf"))
        value = psi(p, c)
        test = ks_2samp(p, c)
        material = max(mp / totals[0] if totals[0] else 0.0,
                       mc / totals[1] if totals[1] else 0.0) >= min_share
        out.append(FeatureDrift(feature=name, psi=value, ks=float(test.statistic),
                                ks_pvalue=float(test.pvalue), mean_abs_previous=mp,
                                mean_abs_current=mc, change=change,
                                drifted=(material and abs(change) > mean_change)
                                or value > psi_limit))
    return out


def _attributions(store: Store, model_key: str, start: datetime, end: datetime
                  ) -> dict[str, list[float]]:
    with store.engine.connect() as conn:
        bodies = conn.execute(select(t.reports.c.body).join(
            t.decisions, t.decisions.c.id == t.reports.c.decision_id).where(
            t.decisions.c.model_key == model_key, t.reports.c.created_at >= start,
            t.reports.c.created_at < end)).scalars().all()
    out: dict[str, list[float]] = {}
    for body in bodies:
        report = json.loads(bytes(body))
        if not report.get("explanations"):
            continue
        for name, value in report["explanations"][0]["attributions"].items():
            out.setdefault(name, []).append(float(value))
    return out


def drift_check(store: Store, model_key: str, *, now: datetime | None = None,
                window_days: float = 7.0, mean_change: float = 0.5,
                psi_limit: float = 0.25, min_reports: int = 30) -> DriftReport:
    """This window against the previous one for one model (too few reports in either
    window: no feature is judged)."""
    if window_days <= 0:
        raise InvalidInputError("window_days", "must be positive", window_days)
    now = now or datetime.now(UTC)
    width = timedelta(days=window_days)
    prev = _attributions(store, model_key, now - 2 * width, now - width)
    cur = _attributions(store, model_key, now - width, now)
    n_prev = max((len(v) for v in prev.values()), default=0)
    n_cur = max((len(v) for v in cur.values()), default=0)
    features = (compare_windows(prev, cur, mean_change=mean_change, psi_limit=psi_limit)
                if min(n_prev, n_cur) >= min_reports else [])
    return DriftReport(model=model_key,
                       previous=((now - 2 * width).isoformat(), (now - width).isoformat()),
                       current=((now - width).isoformat(), now.isoformat()), n_previous=n_prev,
                       n_current=n_cur, features=tuple(features))


def success_rates(store: Store, *, hours: int = 24, now: datetime | None = None
                  ) -> list[dict[str, Any]]:
    """Per hour: explanations stored, explanation jobs failed, and the success rate."""
    now = now or datetime.now(UTC)
    start = now - timedelta(hours=hours)
    with store.engine.connect() as conn:
        done = conn.execute(select(t.reports.c.created_at).where(
            t.reports.c.created_at >= start)).scalars().all()
        failed = conn.execute(select(t.jobs.c.finished_at).where(
            t.jobs.c.status == "failed", t.jobs.c.finished_at >= start)).scalars().all()
    buckets: dict[str, list[int]] = {}
    for stamps, slot in ((done, 0), (failed, 1)):
        for ts in stamps:
            hour = (ts if isinstance(ts, datetime) else datetime.fromisoformat(str(ts))
                    ).strftime("%Y-%m-%dT%H:00Z")
            buckets.setdefault(hour, [0, 0])[slot] += 1
    return [{"hour": h, "explained": ok, "failed": bad, "success_rate": ok / (ok + bad),
             "alert": ok / (ok + bad) < 0.95} for h, (ok, bad) in sorted(buckets.items())]


def run_checks(store: Store, *, window_days: float = 7.0, webhooks: Sequence[Any] = (),
               min_reports: int = 30) -> dict[str, Any]:
    """Drift per model and the hourly success rate, once; alerts raised for what drifted
    (one open alert per model and feature) and for an hour below 95 %."""
    from xai_sandbox.monitor.alerts import raise_alert

    with store.engine.connect() as conn:
        models = conn.execute(select(t.models.c.key).order_by(t.models.c.key)).scalars().all()
    drift = [drift_check(store, key, window_days=window_days, min_reports=min_reports)
             for key in models]
    raised = []
    for report in drift:
        for f in report.features:
            if f.drifted:
                alert = raise_alert(
                    store, "explanation_drift",
                    {"title": f"explanation drift on {f.feature} of {report.model}",
                     "model": report.model, "feature": f.feature, "psi": round(f.psi, 4),
                     "ks": round(f.ks, 4), "mean_abs_change": round(f.change, 4),
                     "window_days": window_days},
                    dedup_key=f"drift:{report.model}:{f.feature}", webhooks=webhooks)
                if alert:
                    raised.append(alert)
    save_state(store, {f"drift:{r.model}": r.to_dict() for r in drift})
    rates = success_rates(store)
    for hour in rates:
        if hour["alert"]:
            alert = raise_alert(store, "explanation_success_rate",
                                {"title": f"explanation success rate {hour['success_rate']:.1%}"
                                          f" in the hour {hour['hour']}", **hour},
                                dedup_key=f"success:{hour['hour']}", webhooks=webhooks)
            if alert:
                raised.append(alert)
    return {"drift": [r.to_dict() for r in drift], "success_rates": rates,
            "alerts_raised": raised}


def save_state(store: Store, items: Mapping[str, Mapping[str, Any]]) -> None:
    """Keep the latest result of each check (replacing the previous one)."""
    from sqlalchemy import delete, insert

    now = datetime.now(UTC)
    with store.writer.begin() as conn:
        for key, body in items.items():
            conn.execute(delete(t.monitor_state).where(t.monitor_state.c.key == key))
            conn.execute(insert(t.monitor_state).values(
                key=key[:300], body_json=json.dumps(body, default=str), updated_at=now))


def load_state(store: Store, prefix: str) -> dict[str, dict[str, Any]]:
    with store.engine.connect() as conn:
        rows = conn.execute(select(t.monitor_state).where(
            t.monitor_state.c.key.startswith(prefix))).mappings().all()
    return {r["key"]: json.loads(r["body_json"]) for r in rows}
