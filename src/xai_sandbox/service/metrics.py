"""Prometheus metrics of the service (``GET /metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["REGISTRY"]

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter("xai_http_requests_total", "HTTP requests by route, method and status",
                   ["route", "method", "status"], registry=REGISTRY)
LATENCY = Histogram("xai_http_request_seconds", "HTTP request latency by route",
                    ["route"], registry=REGISTRY,
                    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
DECISIONS = Counter("xai_decisions_total", "Decisions recorded, by model and outcome",
                    ["model", "outcome"], registry=REGISTRY)
EXPLANATIONS = Counter("xai_explanations_total", "Explanations by method and result",
                       ["method", "result"], registry=REGISTRY)
JOBS = Counter("xai_jobs_finished_total", "Explanation jobs finished by this process",
               ["result"], registry=REGISTRY)
JOBS_WAITING = Gauge("xai_jobs", "Explanation jobs in the database by status", ["status"],
                     registry=REGISTRY)
ACCESS_EVENTS = Counter("xai_access_events_total", "Access events written to the audit log",
                        registry=REGISTRY)
RATE_LIMITED = Counter("xai_rate_limited_total", "Requests refused by a rate limit",
                       ["scope"], registry=REGISTRY)
LOG_SIZE = Gauge("xai_audit_log_size", "Entries in the audit log", registry=REGISTRY)
OPEN_ALERTS = Gauge("xai_alerts_open", "Unacknowledged alerts by kind", ["kind"],
                    registry=REGISTRY)
PENDING_DELIVERIES = Gauge("xai_alert_deliveries_pending",
                           "Webhook deliveries not yet accepted by their receiver",
                           registry=REGISTRY)
SUCCESS_RATE = Gauge("xai_explanation_success_rate",
                     "Explanations stored over explanations attempted, last full hour",
                     registry=REGISTRY)
DRIFT_PSI = Gauge("xai_drift_psi", "PSI of a feature's attributions, this window against "
                  "the previous (latest monitor run)", ["model", "feature"], registry=REGISTRY)
DRIFT_CHANGE = Gauge("xai_drift_mean_abs_change", "Relative change of a feature's mean "
                     "|attribution| (latest monitor run)", ["model", "feature"],
                     registry=REGISTRY)
DRIFTED = Gauge("xai_drift_alert", "1 when a feature drifted in the latest monitor run",
                ["model", "feature"], registry=REGISTRY)
ANCHOR_ALIGNED = Gauge("xai_anchor_decisions_total", "Decisions aligned onto an anchor by "
                       "this process", ["model", "anchor"], registry=REGISTRY)
ANCHOR_HITS = Gauge("xai_anchor_hits_total", "Decisions on which an anchor's risk reached "
                    "its threshold, in this process", ["model", "anchor"], registry=REGISTRY)
