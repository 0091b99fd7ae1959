"""Watch a model's explained decisions for anchor risk, and count anchor hits for /metrics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xai_sandbox.monitor.alerts import raise_alert
from xai_sandbox.workflows.context import Context

__all__ = ["watch"]


def watch(ctx: Context, model_key: str, decision_id: str, report: Mapping[str, Any]) -> list[str]:
    """Anchor-risk alerts: an anchor whose risk reached its threshold on ``n``
    consecutive decisions of a model raises one alert (stored, logged, sent to the
    webhooks). Returns the ids of the alerts raised."""
    anchors = report.get("anchors")
    if not anchors:
        return []
    with ctx.lock:
        for m in anchors["matches"]:
            key = (model_key, str(m["anchor"]))
            seen, hits = ctx.anchor_counts.get(key, (0, 0))
            ctx.anchor_counts[key] = (seen + 1, hits + int(bool(m["hit"])))
    raised = []
    for match, decisions in ctx.streaks.update(model_key, decision_id,
                                                anchors["matches"]):
        body = {"title": f"{match['label']['en']}: risk at or above its threshold on "
                         f"{len(decisions)} consecutive decisions of {model_key}",
                "model": model_key, "anchor": match["anchor"],
                "label": match["label"]["en"], "rule": match["rule"],
                "regulations": "; ".join(match["regulations"]),
                "protected": match["protected"], "consecutive": len(decisions),
                "decisions": decisions}
        alert_id = raise_alert(ctx.store, "anchor_risk", body,
                               dedup_key=f"anchor_risk:{model_key}:{match['anchor']}",
                               webhooks=ctx.webhooks)
        if alert_id is not None:
            raised.append(alert_id)
    return raised
