"""The decisions list's facets (outcome, anchor hits, reliability, review status) follow
every write, the search over them equals a filter over the records themselves, and the
migration's backfill rebuilds them as the writes do. On SQLite and PostgreSQL."""

from __future__ import annotations

import importlib.util
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select

from xai_sandbox.errors import InvalidInputError
from xai_sandbox.store import Store
from xai_sandbox.store import tables as t
from xai_sandbox.store.store import DecisionFilter

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def _report(level: str, shown: bool, hits: list[str]) -> dict[str, Any]:
    body: dict[str, Any] = {"reliability": {"level": level, "shown": shown}}
    if hits is not None:
        body["anchors"] = {"hits": hits, "matches": [], "library": "t"}
    return body


def _fill(store: Store, n: int = 36) -> list[dict[str, Any]]:
    """``n`` decisions of two models over ``n`` days, a report on most, reviews on some;
    returns what each should be found by, worked out from how it was made."""
    for model in ("a", "b"):
        store.register_model(model, "1", model * 64)
    truth = []
    for i in range(n):
        model = "a@1" if i % 3 else "b@1"
        outcome = "bad" if i % 2 else "good"
        stored = store.record_decision(
            model_key=model, subject_id=f"s{i}", inputs={"x": i},
            output={"decision": outcome, "adverse": outcome == "bad"}, policy_version="1",
            case_ref=f"C-{i:03d}", decided_at=START + timedelta(days=i))
        row = {"id": stored.decision_id, "model_key": model, "outcome": outcome,
               "decided_at": START + timedelta(days=i), "anchor_hits": None,
               "reliability": None, "review_status": "none"}
        if i % 5 != 4:
            level = ("low", "normal", "normal")[i % 3]
            shown = i % 7 != 0
            hits = ["vulnerability"] * (i % 4 == 0)
            store.record_report(stored.decision_id, _report(level, shown, hits), "r/1")
            row.update(anchor_hits=len(hits),
                       reliability="withheld" if not shown else level)
        if i % 6 == 1:
            review_id, _ = store.request_review(stored.decision_id, f"s{i}", "please")
            row["review_status"] = "pending"
            if i % 12 == 1:
                store.decide_review(review_id, outcome="reversed", reviewer="r",
                                    role="reviewer", rationale="income")
                row["review_status"] = "reversed"
        truth.append(row)
    return truth


def _matching(truth: list[dict[str, Any]], f: DecisionFilter) -> list[str]:
    keep = []
    for r in truth:
        checks = [f.model_key in (None, r["model_key"]), f.outcome in (None, r["outcome"]),
                  f.reliability in (None, r["reliability"]),
                  f.review_status in (None, r["review_status"]),
                  f.since is None or r["decided_at"] >= f.since,
                  f.until is None or r["decided_at"] < f.until,
                  f.anchor_hit is None or (r["anchor_hits"] is not None
                                           and (r["anchor_hits"] > 0) == f.anchor_hit)]
        if all(checks):
            keep.append(r)
    return [r["id"] for r in sorted(keep, key=lambda r: r["decided_at"], reverse=True)]


FILTERS = [
    DecisionFilter(),
    DecisionFilter(model_key="b@1"),
    DecisionFilter(outcome="bad", model_key="a@1"),
    DecisionFilter(reliability="withheld"),
    DecisionFilter(reliability="low", outcome="good"),
    DecisionFilter(review_status="pending"),
    DecisionFilter(review_status="reversed"),
    DecisionFilter(review_status="none", anchor_hit=False),
    DecisionFilter(anchor_hit=True),
    DecisionFilter(since=START + timedelta(days=10), until=START + timedelta(days=20)),
    DecisionFilter(since=START + timedelta(days=30), model_key="a@1", outcome="bad"),
]


def test_search_equals_a_filter_over_the_records(store: Store) -> None:
    truth = _fill(store)
    for f in FILTERS:
        found, total, capped = store.search_decisions(f, limit=500)
        expected = _matching(truth, f)
        assert [r["decision_id"] for r in found] == expected, f
        assert (total, capped) == (len(expected), False)
    # Every row carries its case reference and facets.
    row = store.search_decisions(DecisionFilter(review_status="reversed"))[0][0]
    assert row["case_ref"] == "C-025" and row["outcome"] == "bad" and row["adverse"] is True


def test_pages_cover_the_list_once_and_the_count_stops_at_its_cap(store: Store) -> None:
    truth = _fill(store, 23)
    pages = [store.search_decisions(limit=5, offset=o)[0] for o in range(0, 25, 5)]
    ids = [r["decision_id"] for p in pages for r in p]
    assert ids == _matching(truth, DecisionFilter())
    _, total, capped = store.search_decisions(limit=5, count_cap=10)
    assert (total, capped) == (10, True)


def test_purge_removes_the_facets_with_the_decision(store: Store) -> None:
    _fill(store, 6)
    purged = store.purge(now=datetime.now(UTC) + timedelta(days=5000))
    assert len(purged) == 6
    assert store.search_decisions()[1] == 0


def test_migration_backfill_rebuilds_the_facets_the_writes_kept(store: Store) -> None:
    _fill(store, 18)
    with store.engine.connect() as conn:
        kept = sorted(tuple(r) for r in conn.execute(select(t.decision_facets)))
    path = (Path(__file__).resolve().parents[2] / "src/xai_sandbox/store/migrations/versions/"
            "0004_console.py")
    spec = importlib.util.spec_from_file_location("migration_0004", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with store.writer.begin() as conn:
        conn.execute(delete(t.decision_facets))
        module.backfill(conn)
    with store.engine.connect() as conn:
        rebuilt = sorted(tuple(r) for r in conn.execute(select(t.decision_facets)))
    assert rebuilt == kept and len(kept) == 18


@pytest.mark.parametrize(("values", "parameter"), [
    ({"reliability": "shaky"}, "reliability"),
    ({"review_status": "maybe"}, "review_status"),
    ({"model_key": ""}, "model_key"),
    ({"since": START, "until": START}, "since"),
])
def test_filter_names_the_bad_parameter(values: dict[str, Any], parameter: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        DecisionFilter(**values)
    assert err.value.parameter == parameter


def test_search_refuses_bad_paging(store: Store) -> None:
    for kwargs, parameter in (({"limit": 0}, "limit"), ({"limit": 501}, "limit"),
                              ({"offset": -1}, "offset")):
        with pytest.raises(InvalidInputError) as err:
            store.search_decisions(**kwargs)
        assert err.value.parameter == parameter
    assert json.dumps(store.search_decisions()[0]) == "[]"


def _verify_facets(store: Store) -> Any:
    from xai_sandbox.store.verify import verify_log

    return verify_log(store.engine, store.keys.verifiers(), store.log.origin)


def test_verify_rebuilds_the_facets_the_writes_kept(store: Store) -> None:
    truth = _fill(store, 24)
    report = _verify_facets(store)
    assert report.ok, report.problems
    assert report.facets == 24
    # Overlapping requests of two kinds, the first decided last; a report that opens its
    # own review; every one of them moves the facets as the log says.
    first = truth[0]["id"]
    contest, _ = store.request_review(first, "s0", "wrong income", kind="contest")
    review, _ = store.request_review(first, "s0", "a human, please")
    store.decide_review(contest, outcome="confirmed", reviewer="r", role="reviewer",
                        rationale="checked")
    required = {"requested_by": "system", "reason": "withheld", "kind": "human_review",
                "channel": "system", "due_at": "2026-04-01T00:00:00+00:00"}
    store.record_report(truth[4]["id"], {**_report("low", False, []),
                                         "review_required": required}, "r/1")
    report = _verify_facets(store)
    assert report.ok, report.problems
    rows = {r["decision_id"]: r for r in store.search_decisions(limit=500)[0]}
    assert rows[first]["review_status"] == "confirmed" and review
    assert rows[truth[4]["id"]]["review_status"] == "pending"
    assert rows[truth[4]["id"]]["reliability"] == "withheld"
    # Purged decisions leave no facets, and none are expected.
    store.purge(now=datetime.now(UTC) + timedelta(days=5000))
    report = _verify_facets(store)
    assert report.ok and report.facets == 0, report.problems


def test_verify_names_an_edited_facet(store: Store) -> None:
    truth = _fill(store, 6)
    target = truth[2]["id"]
    with store.writer.begin() as conn:
        conn.execute(t.decision_facets.update().where(
            t.decision_facets.c.decision_id == target).values(model_key="b@1"))
    problem = _verify_facets(store).problems[0]
    assert problem == (f"decision {target}: facet model_key is 'b@1', the logged records "
                       "give 'a@1'")
