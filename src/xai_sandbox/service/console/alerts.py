"""Alerts, newest first, and their acknowledgement."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query
from fastapi.responses import HTMLResponse, Response

from xai_sandbox.monitor.alerts import acknowledge, list_alerts
from xai_sandbox.service.console.pages import (
    AUDIT_PAGES,
    PAGE_SIZE,
    Csrf,
    P,
    PageNo,
    area_router,
    as_uuid,
    page_url,
    redirect,
)

router = area_router()


@router.get("/alerts")
def alerts(p: P, open_only: Annotated[bool, Query()] = False, page: PageNo = 1
           ) -> HTMLResponse:
    p.require(*AUDIT_PAGES)
    rows = list_alerts(p.rt.store, open_only=open_only, limit=PAGE_SIZE + 1,
                       offset=(page - 1) * PAGE_SIZE)
    return p.render("alerts.html", items=rows[:PAGE_SIZE], open_only=open_only, page=page,
                    has_next=len(rows) > PAGE_SIZE, prev_url=page_url(p.request, page - 1),
                    next_url=page_url(p.request, page + 1),
                    can_ack=p.who.has("compliance_officer", "admin"))


@router.post("/alerts/{alert_id}/ack")
def acknowledge_alert(alert_id: str, p: P, csrf: Csrf = None) -> Response:
    p.check_csrf(csrf)
    p.require("compliance_officer", "admin")
    acknowledge(p.rt.store, as_uuid("alert_id", alert_id), p.who.name)
    return redirect("/console/alerts", notice="alert_acknowledged")
