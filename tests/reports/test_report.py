"""The typed report: its JSON form round-trips, it reads as a mapping of the sections it
carries, and a body that is not a report is refused by name."""

from __future__ import annotations

import pytest

from xai_sandbox.errors import InvalidInputError
from xai_sandbox.reports.render import render_json
from xai_sandbox.reports.report import EXPLAINED_FIELDS, RECORD_FIELDS, REPORT_SCHEMA, Report

HEAD = {"decision": {"decision_id": "d-1", "explained_at": None},
        "model": {"model_id": "credit", "version": "3"},
        "output": {"decision": "bad", "adverse": True}}


def test_a_pending_full_report_keeps_its_null_report_and_no_explained_section() -> None:
    pending = Report(**HEAD, explanation_status="pending or not required")
    assert not pending.explained and "report" not in pending
    full = pending.with_record(report=None, receipt={"leaf_index": 0}, requests=[])
    body = full.to_dict()
    assert body["report"] is None and body["requests"] == [] and "reasons" not in body
    assert set(body) == {*HEAD, "schema_version", "explanation_status", "report", "receipt",
                         "requests"}
    assert Report.from_dict(body).to_dict() == body


def test_the_stored_part_drops_the_live_record_and_round_trips_through_json() -> None:
    explained = Report(**HEAD, reasons={"reasons": [{"rank": 1}]}, explanations=[{"m": 1}],
                       regimes=("GDPR Art. 22",))
    full = explained.with_record(human_review={"status": "pending"}, report={"id": "r"})
    assert full["human_review"] == {"status": "pending"} and full.explained
    stored = full.stored()
    assert set(stored) == {*HEAD, "schema_version", "reasons", "explanations", "regimes"}
    assert stored.to_dict()["regimes"] == ["GDPR Art. 22"]          # JSON form: lists
    assert render_json(stored) == render_json(stored.to_dict())
    assert Report.from_dict(stored.to_dict()) == stored


@pytest.mark.parametrize(("body", "parameter", "fragment"), [
    ({**HEAD, "verdict": 1}, "report", "no xai-sandbox.report/1 report has"),
    ({"decision": {}, "model": {}}, "report", "must carry decision, model and output"),
    ({**HEAD, "schema_version": "other/2"}, "report.schema_version", REPORT_SCHEMA),
    ([1, 2], "report", "must be a mapping"),
])
def test_a_body_that_is_not_a_report_is_refused_by_name(body, parameter, fragment) -> None:
    with pytest.raises(InvalidInputError) as caught:
        Report.from_dict(body)
    assert caught.value.parameter == parameter and fragment in str(caught.value)


def test_with_record_takes_only_the_record_sections() -> None:
    with pytest.raises(InvalidInputError, match="must name sections"):
        Report(**HEAD).with_record(reasons={})
    assert not set(EXPLAINED_FIELDS) & set(RECORD_FIELDS)
