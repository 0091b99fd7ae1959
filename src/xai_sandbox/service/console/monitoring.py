"""Explanation drift and fairness charts of a model's recent reports; for operators, the
models with fingerprint, schema, anchors and policy, and the explanation success rate."""

from __future__ import annotations

from typing import Any

from fastapi.responses import HTMLResponse

from xai_sandbox.reports.render import png_data_uri
from xai_sandbox.service.console.pages import (
    OPERATOR_PAGES,
    REPORT_PAGES,
    P,
    Text,
    area_router,
    choice,
)

router = area_router()


def _drift_chart(report: dict[str, Any]) -> str | None:
    features = report.get("features") or []
    if not features:
        return None
    items = sorted(features, key=lambda f: f["psi"])[-15:]

    def draw(ax: Any) -> None:
        ax.barh([f["feature"] for f in items], [f["psi"] for f in items],
                color=["#b2182b" if f["drifted"] else "#4d4d4d" for f in items])
        ax.axvline(0.25, color="#b2182b", linestyle="--", linewidth=0.8)
        ax.set_xlabel("PSI of the attribution, this window against the previous one "
                      "(dashed: 0.25)", fontsize=8)

    return png_data_uri((6.4, 0.3 * len(items) + 1.0), draw)


def _fairness_chart(points: list[dict[str, float]]) -> str | None:
    if not points:
        return None

    def draw(ax: Any) -> None:
        x = list(range(1, len(points) + 1))
        ax.plot(x, [100 * q["protected"] for q in points], color="#b2182b", marker=".",
                label="protected features")
        ax.plot(x, [100 * q["proxy"] for q in points], color="#2166ac", marker=".",
                label="likely proxies")
        ax.set_xlabel("decisions, oldest to newest", fontsize=8)
        ax.set_ylabel("share of the attribution (%)", fontsize=8)
        ax.legend(fontsize=8)

    return png_data_uri((6.4, 2.6), draw)


@router.get("/monitoring")
def monitoring(p: P, model: Text = None) -> HTMLResponse:
    """Explanation drift and the fairness shares of one model's recent reports."""
    from xai_sandbox.monitor.drift import drift_check, load_state

    p.require(*REPORT_PAGES)
    keys = [m.key for m in p.rt.decider.models()]
    if not keys:
        return p.render("monitoring.html", models=[], model=None, drift=None,
                        drift_chart=None, fairness=None, fairness_chart=None)
    key = choice("model", model, tuple(keys)) or keys[0]
    drift = load_state(p.rt.store, f"drift:{key}").get(f"drift:{key}") or \
        drift_check(p.rt.store, key).to_dict()
    points: list[dict[str, float]] = []
    by_feature: dict[str, list[float]] = {}
    for _, body in p.rt.store.recent_reports(key, 200):
        fairness = body.get("fairness")
        if fairness is None:
            continue
        points.append({"protected": fairness["protected_share"],
                       "proxy": fairness["proxy_share"]})
        for name, share in fairness["by_feature"].items():
            by_feature.setdefault(name, []).append(share)
    summary = {"n": len(points),
               "protected": sum(q["protected"] for q in points) / len(points) if points
               else None,
               "proxy": sum(q["proxy"] for q in points) / len(points) if points else None,
               "by_feature": {k: sum(v) / len(v) for k, v in sorted(by_feature.items())}}
    return p.render("monitoring.html", models=keys, model=key, drift=drift,
                    drift_chart=_drift_chart(drift), fairness=summary,
                    fairness_chart=_fairness_chart(points))


# ---------------------------------------------------------------------- operators
@router.get("/models")
def models(p: P) -> HTMLResponse:
    """Each model's fingerprint, schema, anchors and explanation policy; the explanation
    success rate of the last 24 hours."""
    from xai_sandbox.monitor.drift import success_rates

    p.require(*OPERATOR_PAGES)
    items = []
    for served in p.rt.decider.models():
        items.append({**served.summary(), "schema": [
            {"name": f.name, "kind": f.kind, "protected": f.protected, "mutable": f.mutable}
            for f in served.schema.features]})
    rates = success_rates(p.rt.store, hours=24)
    explained = sum(r["explained"] for r in rates)
    failed = sum(r["failed"] for r in rates)
    return p.render("models.html", items=items, rates=rates, explained=explained,
                    failed=failed, rate=explained / (explained + failed)
                    if explained + failed else None)
