"""Console sessions on the store: a key becomes a session; it ends at sign-out, at expiry,
and with its key or principal."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from xai_sandbox.errors import InvalidInputError
from xai_sandbox.service.sessions import Sessions
from xai_sandbox.settings import Settings
from xai_sandbox.store import Store
from xai_sandbox.store import tables as t
from xai_sandbox.store.accounts import Accounts


@pytest.fixture
def setup(tmp_path: Path):  # type: ignore[no-untyped-def]
    store = Store(Settings(data_dir=tmp_path, log_origin="test.example/sessions"))
    accounts = Accounts(store.engine, store.writer)
    accounts.create_principal("rita", ["reviewer"])
    try:
        yield store, accounts, accounts.issue_key("rita")
    finally:
        store.close()


def test_a_key_becomes_a_session_that_sign_out_ends(setup) -> None:  # type: ignore[no-untyped-def]
    store, accounts, key = setup
    sessions = Sessions(store, accounts)
    assert sessions.start("xai_nothing") is None
    session = sessions.start(key)
    assert session is not None and session.principal.name == "rita"
    found = sessions.resolve(session.token)
    assert found is not None and found.csrf == session.csrf
    assert found.principal.roles == frozenset({"reviewer"})
    with store.engine.connect() as conn:
        stored = conn.execute(select(t.console_sessions.c.token_sha256)).scalars().all()
    assert session.token not in stored and len(stored[0]) == 64  # only its hash is kept
    for wrong in (None, "", session.token[:-1] + "x", "a" * 65):
        assert sessions.resolve(wrong) is None
    sessions.end(session.token)
    assert sessions.resolve(session.token) is None


def test_sessions_expire_and_end_with_their_principal(setup) -> None:  # type: ignore[no-untyped-def]
    store, accounts, key = setup
    brief = Sessions(store, accounts, hours=0.5 / 3600)
    session = brief.start(key)
    assert session is not None and brief.resolve(session.token) is not None
    time.sleep(0.6)
    assert brief.resolve(session.token) is None
    sessions = Sessions(store, accounts)
    other = sessions.start(key)
    assert other is not None
    with store.writer.begin() as conn:
        conn.execute(update(t.principals).values(disabled=True))
    assert sessions.resolve(other.token) is None


def test_old_sessions_are_cleared_when_new_ones_start(setup) -> None:  # type: ignore[no-untyped-def]
    store, accounts, key = setup
    sessions = Sessions(store, accounts)
    for _ in range(3):
        sessions.start(key)
    from datetime import UTC, datetime, timedelta

    with store.writer.begin() as conn:
        conn.execute(update(t.console_sessions).values(
            expires_at=datetime.now(UTC) - timedelta(days=2)))
    sessions.start(key)
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.console_sessions)
                            ).scalar_one() == 1


@pytest.mark.parametrize("hours", [0, -1, 24 * 7 + 1])
def test_lifetime_is_checked(setup, hours: float) -> None:  # type: ignore[no-untyped-def]
    store, accounts, _ = setup
    with pytest.raises(InvalidInputError) as err:
        Sessions(store, accounts, hours=hours)
    assert err.value.parameter == "hours"
