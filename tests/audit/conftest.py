"""Backends for the store tests: a SQLite file, and a real PostgreSQL server on loopback.

The PostgreSQL server programs (initdb, pg_ctl, postgres) must be installed; without them
the suite fails with a message saying so (see ``tools/pgserver.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from xai_sandbox.settings import Settings
from xai_sandbox.store import Store


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    url = None
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres").new_database()
    return Settings(data_dir=tmp_path, database_url=url, log_origin="test.example/log")


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    s = Store(settings)
    try:
        yield s
    finally:
        s.close()
