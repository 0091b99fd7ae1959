"""The web console under ``/console``: server-rendered pages (Jinja2) for the people who
never call the API, one module per area.

- :mod:`.subject`: the person decided about: their decisions, the reasons in plain
  language, what they could change, their rights, a form to ask for a human review and
  its status.
- :mod:`.reviews`: reviewers: the queue by due date, claim, the full report, decide with
  a rationale.
- :mod:`.decisions`, :mod:`.audit`, :mod:`.alerts`, :mod:`.monitoring`: compliance
  officers and auditors: search and filter decisions, full reports (PDF and JSON), the
  audit log (checkpoint, receipts, consistency, full verification), alerts, drift and
  fairness charts; operators: models with fingerprint, schema, anchors and policy; the
  explanation success rate.
- :mod:`.signin`: sign-in and sign-out; :mod:`.pages`: what every page shares.

Every page is a library call, like the API's routes, under the same roles
(:mod:`xai_sandbox.service.deps`); every page that shows a report writes the same access
event as the API. Sign-in turns an API key into a session cookie
(:mod:`xai_sandbox.service.sessions`); every form carries the session's CSRF token. Text
comes from ``data/console/messages.yaml`` (English, Chinese).
"""

from __future__ import annotations

from fastapi import APIRouter

from xai_sandbox.service.console import (
    alerts,
    audit,
    decisions,
    monitoring,
    reviews,
    signin,
    subject,
)
from xai_sandbox.service.console.pages import (
    COOKIE,
    NAV,
    NOTICES,
    SignInRequiredError,
    error_page,
    login_url,
    messages,
)

__all__ = ["AREAS", "COOKIE", "NAV", "NOTICES", "SignInRequiredError", "error_page",
           "login_url", "messages", "router"]

AREAS = (signin, subject, reviews, decisions, audit, alerts, monitoring)

router = APIRouter()
for _area in AREAS:
    router.include_router(_area.router)
