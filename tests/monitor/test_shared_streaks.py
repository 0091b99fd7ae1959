"""Anchor streaks shared through the database: the decisions of two processes count in one
streak, a miss breaks it, and under concurrent updates every run of n hits raises exactly
one alert, naming each decision once."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from xai_sandbox.monitor.alerts import AnchorStreaks
from xai_sandbox.monitor.streaks import SharedStreaks
from xai_sandbox.settings import Settings
from xai_sandbox.store import Store
from xai_sandbox.workflows.context import Context

HIT = [{"anchor": "debt-burden", "hit": True}, {"anchor": "age", "hit": False}]
MISS = [{"anchor": "debt-burden", "hit": False}, {"anchor": "age", "hit": False}]


@pytest.fixture(params=["sqlite", "postgresql"])
def two_stores(request: pytest.FixtureRequest, tmp_path: Path):
    url = request.getfixturevalue("postgres").new_database() \
        if request.param == "postgresql" else None
    stores = [Store(Settings(data_dir=tmp_path, database_url=url)) for _ in range(2)]
    yield stores
    for s in stores:
        s.close()


def test_two_processes_count_in_one_streak_and_a_miss_breaks_it(two_stores) -> None:
    a, b = (SharedStreaks(s, n=3) for s in two_stores)
    assert a.update("m@1", "d1", HIT) == []
    assert b.update("m@1", "d2", HIT) == []
    assert a.update("m@1", "d3", MISS) == []  # broken
    assert b.update("m@1", "d4", HIT) == []
    assert a.update("m@1", "d5", HIT) == []
    due = b.update("m@1", "d6", HIT)
    assert [(m["anchor"], ids) for m, ids in due] == [("debt-burden", ["d4", "d5", "d6"])]
    assert a.update("m@1", "d7", HIT) == []  # a new streak starts after the alert
    assert a.update("other@1", "d8", HIT) == []  # another model has its own
    assert a.update("m@1", "d9", HIT, replay=True) == []  # replay: the state is stored


def test_concurrent_hits_raise_one_alert_per_run_of_n(two_stores) -> None:
    streaks = [SharedStreaks(s, n=5) for s in two_stores]
    alerts: list[list[str]] = []
    lock = threading.Lock()

    def hits(worker: int) -> None:
        for k in range(10):
            due = streaks[worker % 2].update("m@1", f"w{worker}-{k}", HIT)
            with lock:
                alerts.extend(ids for _, ids in due)

    threads = [threading.Thread(target=hits, args=(w,)) for w in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(alerts) == 8  # 40 hits, n = 5
    named = [d for ids in alerts for d in ids]
    assert sorted(named) == sorted(f"w{w}-{k}" for w in range(4) for k in range(10))


def test_the_service_shares_streaks_on_postgresql_only(tmp_path: Path, postgres) -> None:
    local = Store(Settings(data_dir=tmp_path / "a"))
    shared = Store(Settings(data_dir=tmp_path / "b", database_url=postgres.new_database()))
    try:
        assert isinstance(Context(local).streaks, AnchorStreaks)
        assert isinstance(Context(shared).streaks, SharedStreaks)
    finally:
        local.close()
        shared.close()
