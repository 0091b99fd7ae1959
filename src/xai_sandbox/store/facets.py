"""What decisions are searched and reviewed by: review kinds and states, reliability
levels, the facets a decision and its report set, and the decisions list's filter.

The writes set the facets with these rules and verification rebuilds them with the same
ones from the logged records.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import xai_sandbox.store.tables as t
from xai_sandbox.errors import InvalidInputError
from xai_sandbox.store.fields import check_text

__all__ = ["RELIABILITY_LEVELS", "REVIEW_KINDS", "REVIEW_OUTCOMES", "REVIEW_STATES",
           "DecisionFilter", "decision_facets", "report_facets"]

REVIEW_OUTCOMES = ("confirmed", "overridden", "reversed")
REVIEW_KINDS = ("human_review", "contest", "explanation")
REVIEW_STATES = ("none", "pending", *REVIEW_OUTCOMES)
RELIABILITY_LEVELS = ("normal", "low", "withheld")


def decision_facets(row: Mapping[str, Any]) -> dict[str, Any]:
    """The facets a decision row sets when it is recorded (its report and reviews update
    them)."""
    output = json.loads(row["output_json"])
    return {"decision_id": row["id"], "model_key": row["model_key"],
            "decided_at": row["decided_at"], "outcome": str(output.get("decision"))[:64],
            "adverse": bool(output.get("adverse")), "anchor_hits": None, "reliability": None,
            "review_status": "none"}


def report_facets(report: Mapping[str, Any]) -> dict[str, Any]:
    """The search facets a report sets: anchor hits and reliability (``withheld`` when the
    explanation may not be shown). Migration 0004 keeps a frozen copy of this rule."""
    reliability = report.get("reliability") or {}
    level = ("withheld" if reliability.get("shown") is False
             else reliability.get("level") or "normal")
    return {"anchor_hits": len((report.get("anchors") or {}).get("hits") or []),
            "reliability": level}


@dataclass(frozen=True)
class DecisionFilter:
    """What the decisions list is narrowed to (``None``: any). Dates are inclusive from
    ``since`` and exclusive at ``until``; ``anchor_hit`` True keeps decisions with at
    least one anchor hit, False those explained with none."""

    model_key: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    outcome: str | None = None
    anchor_hit: bool | None = None
    reliability: str | None = None
    review_status: str | None = None

    def __post_init__(self) -> None:
        for name, allowed in (("reliability", RELIABILITY_LEVELS),
                              ("review_status", REVIEW_STATES)):
            value = getattr(self, name)
            if value is not None and value not in allowed:
                raise InvalidInputError(name, f"must be one of {list(allowed)}", value)
        for name in ("model_key", "outcome"):
            value = getattr(self, name)
            if value is not None:
                check_text(name, value, 260)
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise InvalidInputError("since", f"must be before until ({self.until})",
                                    self.since)

    def where(self) -> list[Any]:
        f = t.decision_facets.c
        clauses: list[Any] = []
        for column, value in ((f.model_key, self.model_key), (f.outcome, self.outcome),
                              (f.reliability, self.reliability),
                              (f.review_status, self.review_status)):
            if value is not None:
                clauses.append(column == value)
        if self.since is not None:
            clauses.append(f.decided_at >= self.since)
        if self.until is not None:
            clauses.append(f.decided_at < self.until)
        if self.anchor_hit is True:
            clauses.append(f.anchor_hits > 0)
        elif self.anchor_hit is False:
            clauses.append(f.anchor_hits == 0)
        return clauses

