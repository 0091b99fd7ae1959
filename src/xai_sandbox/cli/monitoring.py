"""``xai-sandbox monitor``: drift and success-rate checks, fairness, calibration."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from xai_sandbox.cli.common import fail, monitor, open_store
from xai_sandbox.errors import XaiSandboxError


@monitor.command("run")
def monitor_run(
    window_days: Annotated[float, typer.Option(help="window length in days")] = 7.0,
    every: Annotated[float, typer.Option(help="repeat every this many seconds (0: once)")] = 0,
    min_reports: Annotated[int, typer.Option(help="reports needed in each window")] = 30,
) -> None:
    """Compare this window's attributions with the previous window's per model and
    feature (PSI, KS, mean |attribution|), check the explanation success rate per hour,
    raise alerts (delivered to XAI_SANDBOX_WEBHOOKS) and print the result as JSON."""
    import time

    from xai_sandbox.monitor.alerts import WebhookDispatcher, parse_webhooks
    from xai_sandbox.monitor.drift import run_checks

    try:
        store = open_store()
        hooks = parse_webhooks(store.settings.webhooks)
        while True:
            result = run_checks(store, window_days=window_days, webhooks=hooks,
                                min_reports=min_reports)
            WebhookDispatcher(store).deliver_due()
            print(json.dumps(result, indent=2, default=str))
            if every <= 0:
                return
            time.sleep(every)
    except XaiSandboxError as exc:
        raise fail(exc) from exc


@monitor.command("fairness")
def monitor_fairness(
    model: Annotated[str, typer.Option(help="model key, e.g. credit@3")],
    limit: Annotated[int, typer.Option(help="decisions to read, newest first")] = 1000,
) -> None:
    """Fairness of a served model on its own recent decisions: how often changing only a
    protected attribute changes the decision, the share of attribution on protected
    features, and the features that are likely proxies for them."""
    import numpy as np

    from xai_sandbox.semantics.fairness import counterfactual_fairness, likely_proxies
    from xai_sandbox.workflows import Decider

    try:
        store = open_store()
        decider = Decider(store)
        decider.load_registered()
        served = decider.model_by_key(model)
        decisions = store.decisions_of(model_key=model, limit=limit)
        rows = [p for p in (store.payload(d["id"]) for d in decisions) if p is not None]
        blocks = [r["body"]["fairness"] for r in
                  (store.latest_report(d["id"]) for d in decisions)
                  if r is not None and "fairness" in r["body"]]
        shares = [b["protected_share"] for b in blocks]
        proxy = [b["proxy_share"] for b in blocks if "proxy_share" in b]
        result = {"model": model, "decisions": len(rows),
                  "counterfactual_fairness": counterfactual_fairness(served.model, rows,
                                                                     data=served.data)
                  if rows else {},
                  "protected_share": {"mean": float(np.mean(shares)),
                                      "max": float(np.max(shares))} if shares else None,
                  "proxy_share": {"mean": float(np.mean(proxy)),
                                  "max": float(np.max(proxy))} if proxy else None,
                  "likely_proxies": likely_proxies(served.schema, rows)
                  if len(rows) >= 50 else "needs at least 50 decisions"}
    except XaiSandboxError as exc:
        raise fail(exc) from exc
    print(json.dumps(result, indent=2))


@monitor.command("calibrate")
def monitor_calibrate(
    model: Annotated[str, typer.Option(help="model key, e.g. credit@3")],
    precision: Annotated[float, typer.Option(help="target precision of an alert")] = 0.9,
    min_wrong: Annotated[int, typer.Option(help="overridden or reversed reviews needed")] = 5,
) -> None:
    """Pick each anchor's alert threshold from reviewed decisions for a target precision,
    and record the calibration in the audit log (used from the next start)."""
    from xai_sandbox.monitor.calibrate import calibrate, record_calibration

    try:
        store = open_store()
        result = calibrate(store, model, target_precision=precision, min_wrong=min_wrong)
        calibration_id, leaf = record_calibration(store, result)
    except XaiSandboxError as exc:
        raise fail(exc) from exc
    print(json.dumps({**result, "calibration_id": calibration_id, "leaf_index": leaf},
                     indent=2))
