"""Anchor thresholds from evidence, not guesses.

A reviewed decision is a labelled example: a human reviewer who overrode or reversed it
says the automated decision was wrong (a false rejection, say); one who confirmed it says
it was right. For each anchor, :func:`calibrate` picks the lowest risk threshold at which
the decisions flagged (risk at or above it) were wrong with at least the target precision,
and reports its precision, recall and support. With too few wrong decisions to tell, the
anchor keeps its threshold and says so. :func:`record_calibration` stores the result and
commits to it in the audit log; a model registered (or reloaded) afterwards uses it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from xai_sandbox.audit.canonical import canonical_json
from xai_sandbox.errors import InvalidInputError
from xai_sandbox.store import tables as t
from xai_sandbox.store.store import Store

__all__ = ["calibrate", "latest_thresholds", "record_calibration"]

WRONG = ("overridden", "reversed")


def _examples(store: Store, model_key: str) -> list[tuple[dict[str, float], bool]]:
    """(anchor -> risk, decision was wrong) for every reviewed, explained decision."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(t.reports.c.decision_id, t.reports.c.body, t.reviews.c.status)
            .join(t.decisions, t.decisions.c.id == t.reports.c.decision_id)
            .join(t.reviews, t.reviews.c.decision_id == t.reports.c.decision_id)
            .where(t.decisions.c.model_key == model_key,
                   t.reviews.c.status.in_(("confirmed", *WRONG)))).all()
    seen: dict[str, tuple[dict[str, float], bool]] = {}
    for decision_id, body, status in rows:
        anchors = json.loads(bytes(body)).get("anchors")
        if anchors:
            seen[decision_id] = ({m["anchor"]: float(m["risk"]) for m in anchors["matches"]},
                                 status in WRONG)
    return list(seen.values())


def calibrate(store: Store, model_key: str, *, target_precision: float = 0.9,
              min_wrong: int = 5) -> dict[str, Any]:
    """Per anchor: the threshold that reaches ``target_precision`` on reviewed decisions."""
    if not 0 < target_precision <= 1:
        raise InvalidInputError("target_precision", "must be in (0, 1]", target_precision)
    examples = _examples(store, model_key)
    wrong_total = sum(w for _, w in examples)
    anchors = sorted({a for risks, _ in examples for a in risks})
    result: dict[str, Any] = {}
    for anchor in anchors:
        scored = sorted(((r.get(anchor, 0.0), w) for r, w in examples), reverse=True)
        if wrong_total < min_wrong:
            result[anchor] = {"status": f"kept: {wrong_total} wrong decisions reviewed, "
                                        f"{min_wrong} needed"}
            continue
        best = None
        flagged = hits = 0
        for i, (risk, wrong) in enumerate(scored):
            flagged += 1
            hits += wrong
            if i + 1 < len(scored) and scored[i + 1][0] == risk:
                continue  # a threshold flags every decision at its risk
            if risk > 0 and hits / flagged >= target_precision:
                best = {"threshold": risk, "precision": hits / flagged,
                        "recall": hits / wrong_total, "flagged": flagged,
                        "status": "calibrated"}
        result[anchor] = best or {"status": f"kept: no threshold reaches precision "
                                            f"{target_precision:.0%}"}
    return {"model": model_key, "target_precision": target_precision,
            "reviewed": len(examples), "wrong": wrong_total, "anchors": result}


def record_calibration(store: Store, result: Mapping[str, Any]) -> tuple[str, int]:
    """Store a calibration and log it; returns (id, leaf)."""
    row = {"id": str(uuid.uuid4()), "model_key": str(result["model"])[:260],
           "body_json": canonical_json(dict(result)).decode(), "created_at": datetime.now(UTC)}
    with store.writer.begin() as conn:
        return str(row["id"]), store._record(conn, t.calibrations, row,
                                             "calibration_recorded")


def latest_thresholds(store: Store, model_key: str) -> dict[str, float]:
    """The calibrated thresholds of a model's newest calibration (anchor -> threshold)."""
    with store.engine.connect() as conn:
        body = conn.execute(select(t.calibrations.c.body_json).where(
            t.calibrations.c.model_key == model_key)
            .order_by(t.calibrations.c.created_at.desc()).limit(1)).scalar()
    if body is None:
        return {}
    return {a: float(v["threshold"]) for a, v in json.loads(body)["anchors"].items()
            if v.get("status") == "calibrated"}
