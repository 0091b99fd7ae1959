"""The live service shared by a test module (see ``tests/liveserver.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from liveserver import LiveServer, make_settings, prepared


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One service (SQLite) shared by a test module."""
    server = prepared(make_settings(tmp_path_factory.mktemp("service"))).start()
    try:
        yield server
    finally:
        server.stop()
