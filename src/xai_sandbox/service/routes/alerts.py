"""Alerts: read (compliance_officer, auditor, admin); acknowledge (compliance_officer,
admin)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query

from xai_sandbox.monitor.alerts import acknowledge, list_alerts
from xai_sandbox.service.deps import RT, Uuid, Who, require
from xai_sandbox.service.schemas import Alert, AlertAcknowledged
from xai_sandbox.service.strict import resource_router

router = resource_router("alerts")
ALERT_READERS = ("compliance_officer", "auditor", "admin")


@router.get("/v1/alerts", response_model=list[Alert])
def alerts(rt: RT, who: Who, open_only: bool = False,
           limit: Annotated[int, Query(ge=1, le=500)] = 100,
           offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0) -> list[dict[str, Any]]:
    """Alerts, newest first, with the state of their webhook deliveries."""
    require(who, *ALERT_READERS)
    return list_alerts(rt.store, open_only=open_only, limit=limit, offset=offset)


@router.post("/v1/alerts/{alert_id}/ack")
def acknowledge_alert(alert_id: Uuid, rt: RT, who: Who) -> AlertAcknowledged:
    """Acknowledge an alert (an alert of the same kind can then be raised again)."""
    require(who, "compliance_officer", "admin")
    acknowledge(rt.store, alert_id, who.name)
    return AlertAcknowledged(alert_id=alert_id, acknowledged_by=who.name)
