"""Operations: ``/health``, ``/health/live`` and ``/health/ready`` (public) and
``/metrics`` (operator, auditor, admin)."""

from __future__ import annotations

from fastapi import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import SQLAlchemyError

import xai_sandbox.service.metrics as metrics
from xai_sandbox.monitor.drift import load_state, success_rates
from xai_sandbox.service.deps import PUBLIC, RT, Who, require
from xai_sandbox.service.schemas import Health, Probe
from xai_sandbox.service.strict import resource_router
from xai_sandbox.store.engine import schema_current
from xai_sandbox.store.queries import open_alerts_by_kind, pending_deliveries

router = resource_router("operations")


@router.get("/health", openapi_extra=PUBLIC)
def health(rt: RT) -> Health:
    """Liveness and readiness: the database answers."""
    return Health(status="ok", log_size=rt.store.log.size(), models=len(rt.decider.models()))


@router.get("/health/live", openapi_extra=PUBLIC)
def live() -> Probe:
    """Liveness: the process answers (restart it when this fails); no database call."""
    return Probe(status="ok")


@router.get("/health/ready", openapi_extra=PUBLIC,
            responses={503: {"model": Probe, "description": "not ready: take this process "
                                                            "out of the load balancer"}})
def ready(rt: RT, response: Response) -> Probe:
    """Readiness: the database answers and its schema is the one this code expects (a
    process that started before a migration, or whose database is away, is not ready)."""
    try:
        current = schema_current(rt.store.engine)
    except SQLAlchemyError as exc:
        response.status_code = 503
        return Probe(status="not ready", reason=f"database: {type(exc).__name__}")
    if not current:
        response.status_code = 503
        return Probe(status="not ready", reason="database schema is not at this version's "
                                                "head (run the migrations)")
    return Probe(status="ok")


@router.get("/metrics",
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}},
                             "description": "Prometheus text format"}})
def prometheus(rt: RT, who: Who) -> Response:
    """Prometheus metrics (text exposition format)."""
    require(who, "operator", "auditor", "admin")
    for status, n in rt.decider.jobs.counts().items():
        metrics.JOBS_WAITING.labels(status).set(n)
    metrics.LOG_SIZE.set(rt.store.log.size())
    open_alerts = open_alerts_by_kind(rt.store)
    pending = pending_deliveries(rt.store)
    metrics.OPEN_ALERTS.clear()
    for kind, n in open_alerts.items():
        metrics.OPEN_ALERTS.labels(kind).set(n)
    metrics.PENDING_DELIVERIES.set(pending)
    rates = success_rates(rt.store, hours=2)
    if rates:
        metrics.SUCCESS_RATE.set(rates[-1]["success_rate"])
    for (model, anchor), (seen, hits) in list(rt.decider.anchor_counts.items()):
        metrics.ANCHOR_ALIGNED.labels(model, anchor).set(seen)
        metrics.ANCHOR_HITS.labels(model, anchor).set(hits)
    for gauge in (metrics.DRIFT_PSI, metrics.DRIFT_CHANGE, metrics.DRIFTED):
        gauge.clear()
    for report in load_state(rt.store, "drift:").values():
        for f in report["features"]:
            metrics.DRIFT_PSI.labels(report["model"], f["feature"]).set(f["psi"])
            metrics.DRIFT_CHANGE.labels(report["model"], f["feature"]).set(f["change"])
            metrics.DRIFTED.labels(report["model"], f["feature"]).set(float(f["drifted"]))
    return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)
