"""The REST API: one router per resource, under ``/v1``, plus ``/health`` and
``/metrics``.

Who may call what:

- models: register (operator, admin); list (every staff role);
- ``POST /v1/decisions`` (operator); ``POST /v1/explain`` (operator, admin);
- decision list: staff roles; a subject sees only their own;
- subject view and review request: the subject of the decision (any other id is 404, the
  same answer as an unknown id), and staff roles for the view;
- full report (JSON, HTML, PDF): reviewer, compliance_officer, auditor, admin;
- review queue: reviewer, compliance_officer; claim and decide: reviewer;
- audit: the latest checkpoint is public (it holds no personal data; publishing it is
  what lets others hold the log to it); proofs and entries: auditor, compliance_officer,
  admin;
- ``/metrics``: operator, auditor, admin. ``/health`` is public.

A new endpoint goes in the router of its resource; a new resource gets its own module,
listed in :data:`RESOURCES`.
"""

from __future__ import annotations

from fastapi import APIRouter

from xai_sandbox.service.routes import (
    alerts,
    audit,
    decisions,
    explain,
    jobs,
    models,
    ops,
    reports,
    reviews,
)

__all__ = ["RESOURCES", "router"]

# In the order of the OpenAPI document.
RESOURCES = (ops, models, decisions, reports, explain, jobs, reviews, alerts, audit)

router = APIRouter()
for _resource in RESOURCES:
    router.include_router(_resource.router)
