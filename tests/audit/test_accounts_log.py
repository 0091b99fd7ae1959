"""Who may do what is in the audit log: every change to a principal or an API key appends
the record's state, ``verify`` replays those entries against the tables, and rebuilds the
decisions' facets from the logged records. Each tampering below is made with plain SQL
and must fail verification naming the record. On SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, delete, insert, select, update

from xai_sandbox.audit.verify import VerifyReport
from xai_sandbox.errors import ConflictError, InvalidInputError, NotFoundError
from xai_sandbox.settings import Settings
from xai_sandbox.store import Store
from xai_sandbox.store import tables as t
from xai_sandbox.store.accounts import Accounts
from xai_sandbox.store.entries import state_entry
from xai_sandbox.store.store import make_engine, writer
from xai_sandbox.store.verify import verify_log

FP = "ab" * 32
SUBJECT = "sam.subject@example.org"


def _verify(store: Store, workers: int = 1) -> VerifyReport:
    return verify_log(store.engine, store.keys.verifiers(), store.log.origin, workers=workers)


def _populate(store: Store) -> dict[str, Any]:
    """Principals and keys made through the API, and decisions with report and reviews."""
    accounts = Accounts(store.engine, store.writer)
    ids: dict[str, Any] = {"accounts": accounts}
    ids["sam"] = accounts.create_principal(SUBJECT, ["subject"],
                                           subject_ref=store.subject_ref("sam-id-1"))
    ids["rita"] = accounts.create_principal("rita", ["reviewer"])
    ids["olga"] = accounts.create_principal("olga", ["operator"])
    ids["vic"] = accounts.create_principal("vic", ["auditor"])
    ids["nokey"] = accounts.create_principal("nokey", ["auditor"])
    ids["sam_key"] = accounts.issue_key(SUBJECT).split("_")[1]
    ids["rita_key"] = accounts.issue_key("rita").split("_")[1]
    ids["old_key"] = accounts.issue_key("rita", "laptop").split("_")[1]
    accounts.issue_key("olga")
    accounts.issue_key("vic")
    accounts.revoke_key(ids["old_key"])
    accounts.set_roles("olga", ["operator", "auditor"])
    accounts.set_disabled("vic")

    key, _ = store.register_model("credit", "1", FP)
    decided = [store.record_decision(model_key=key, subject_id=f"sam-id-{i}", inputs={"i": i},
                                     output={"decision": d, "adverse": d == "rejected"},
                                     policy_version="p")
               for i, d in enumerate(("rejected", "approved", "rejected"))]
    ids["decisions"] = [d.decision_id for d in decided]
    store.record_report(decided[0].decision_id,
                        {"reliability": {"level": "low", "shown": True},
                         "anchors": {"hits": ["age"]}}, "r/1")
    done, _ = store.request_review(decided[0].decision_id, SUBJECT, "please")
    store.decide_review(done, outcome="overridden", reviewer="rita", role="reviewer",
                        rationale="income verified")
    ids["pending"], _ = store.request_review(decided[2].decision_id, SUBJECT, "why")
    store.log.checkpoint()
    return ids


def test_changes_are_logged_and_an_untouched_store_verifies(store: Store) -> None:
    ids = _populate(store)
    report = _verify(store)
    assert report.ok, report.problems
    assert (report.principals, report.api_keys, report.facets) == (5, 5, 3)
    with store.engine.connect() as conn:
        rows = conn.execute(select(t.log_entries.c.kind, t.log_entries.c.record_id,
                                   t.log_entries.c.body).order_by(t.log_entries.c.idx)).all()
    kinds = [r.kind for r in rows]
    assert kinds[:13] == ["principal_recorded"] * 5 + ["api_key_recorded"] * 6 + [
        "principal_recorded"] * 2
    changes = [json.loads(r.body)["change"] for r in rows[:13]]
    assert changes == ["created"] * 10 + ["revoked", "roles_changed", "disabled"]
    olga = json.loads(rows[11].body)
    assert olga["principal_id"] == ids["olga"] and olga["roles"] == ["auditor", "operator"]
    assert json.loads(rows[12].body)["disabled"] is True
    assert json.loads(rows[10].body)["revoked_at"] is not None
    # No personal data in these entries: the subject's login enters as a hash, their id
    # as the peppered reference the decisions carry.
    bodies = b"".join(r.body for r in rows[:13])
    assert SUBJECT.encode() not in bodies and b"sam-id" not in bodies
    sam = json.loads(rows[0].body)
    assert sam["name_sha256"] == hashlib.sha256(SUBJECT.encode()).hexdigest()
    assert sam["subject_ref"] == store.subject_ref("sam-id-1")
    # Verification in several processes collects the entries of every range.
    assert _verify(store, workers=2).ok


def test_role_changes_and_disabling_take_effect_and_are_checked(store: Store) -> None:
    accounts = Accounts(store.engine, store.writer, cache_seconds=60)
    accounts.create_principal("ann", ["reviewer"])
    key = accounts.issue_key("ann")
    assert accounts.authenticate(key).roles == {"reviewer"}  # type: ignore[union-attr]
    accounts.set_roles("ann", ["reviewer", "auditor"])
    assert accounts.authenticate(key).roles == {"reviewer", "auditor"}  # type: ignore[union-attr]
    accounts.set_disabled("ann")
    assert accounts.authenticate(key) is None
    accounts.set_disabled("ann", False)
    assert accounts.authenticate(key) is not None
    with pytest.raises(ConflictError):
        accounts.set_disabled("ann", False)
    with pytest.raises(InvalidInputError) as err:
        accounts.set_roles("ann", ["subject"])
    assert err.value.parameter == "roles"
    with pytest.raises(InvalidInputError, match="roles: must be one or more"):
        accounts.set_roles("ann", ["root"])
    with pytest.raises(NotFoundError):
        accounts.set_roles("nobody", ["auditor"])
    with pytest.raises(NotFoundError):
        accounts.issue_key("nobody")
    with pytest.raises(NotFoundError):
        accounts.revoke_key("000000000000")
    # The refused changes wrote nothing: the log holds the principal's creation, its
    # key's, and the three changes made.
    with store.engine.connect() as conn:
        changes = [json.loads(b)["change"] for b in conn.execute(
            select(t.log_entries.c.body).order_by(t.log_entries.c.idx)).scalars()]
    assert changes == ["created", "created", "roles_changed", "disabled", "enabled"]
    assert _verify(store).ok


def _principal_of(store: Store, name: str) -> str:
    return Accounts(store.engine, store.writer).principal_id(name)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _insert_principal(conn: Connection, _ids: dict[str, Any]) -> None:
    conn.execute(insert(t.principals).values(
        id="00000000-0000-0000-0000-0000000000aa", name="mallory", roles="admin",
        subject_ref=None, created_at=datetime.now(UTC), disabled=False))


def _insert_key(conn: Connection, ids: dict[str, Any]) -> None:
    conn.execute(insert(t.api_keys).values(
        id="aaaaaaaaaaaa", principal_id=ids["rita"], secret_sha256=_sha("known"),
        label="x", created_at=datetime.now(UTC)))


def _facet(decision: int, **values: Any) -> Callable[[Connection, dict[str, Any]], None]:
    def change(conn: Connection, ids: dict[str, Any]) -> None:
        conn.execute(update(t.decision_facets).where(
            t.decision_facets.c.decision_id == ids["decisions"][decision]).values(**values))
    return change


def _sql(table: Any, where: str, **values: Any) -> Callable[[Connection, dict[str, Any]], None]:
    """``UPDATE table SET values WHERE id = ids[where]``; a value ``ids:NAME`` is
    ``ids[NAME]``."""
    def change(conn: Connection, ids: dict[str, Any]) -> None:
        conn.execute(update(table).where(table.c.id == ids[where]).values(**{
            k: ids[v[4:]] if isinstance(v, str) and v.startswith("ids:") else v
            for k, v in values.items()}))
    return change


def _insert_decision(conn: Connection, _ids: dict[str, Any]) -> None:
    """A decision (and the facets row the list shows it by) that was never logged."""
    now = datetime.now(UTC)
    conn.execute(insert(t.decisions).values(
        id="00000000-0000-0000-0000-0000000000dd", case_ref="C-X", subject_ref="0" * 64,
        model_key="credit@1", input_commitment="0" * 64,
        output_json='{"adverse":false,"decision":"approved"}', policy_version="p",
        decided_at=now, retain_until=now, legal_hold=False))
    conn.execute(insert(t.decision_facets).values(
        decision_id="00000000-0000-0000-0000-0000000000dd", model_key="credit@1",
        decided_at=now, outcome="approved", adverse=False, review_status="none"))


def _insert_access(conn: Connection, ids: dict[str, Any]) -> None:
    conn.execute(insert(t.access_events).values(
        id="00000000-0000-0000-0000-0000000000ee", record_type="decisions",
        record_id=ids["decisions"][0], action="read", actor="x", role="auditor",
        purpose="p", at=datetime.now(UTC)))


def _delete_facet(conn: Connection, ids: dict[str, Any]) -> None:
    conn.execute(delete(t.decision_facets).where(
        t.decision_facets.c.decision_id == ids["decisions"][1]))


def _delete_principal(conn: Connection, ids: dict[str, Any]) -> None:
    conn.execute(delete(t.principals).where(t.principals.c.id == ids["nokey"]))


# (tampering, what the first problem must say: a template over the populated ids)
TAMPERING: dict[str, tuple[Callable[[Connection, dict[str, Any]], None], str]] = {
    "subject made admin": (_sql(t.principals, "sam", roles="admin,subject"),
                           "principal {sam} (" + SUBJECT + "): roles differ from the log"),
    "key hash replaced": (_sql(t.api_keys, "rita_key", secret_sha256=_sha("mine")),
                          "api key {rita_key}: secret_sha256 differs from the log"),
    "principal inserted without entry": (
        _insert_principal,
        "principal 00000000-0000-0000-0000-0000000000aa (mallory): has no log entry"),
    "key inserted without entry": (_insert_key, "api key aaaaaaaaaaaa: has no log entry"),
    "key revocation cleared": (_sql(t.api_keys, "old_key", revoked_at=None),
                               "api key {old_key}: revoked_at differs from the log"),
    "key moved to another principal": (
        _sql(t.api_keys, "sam_key", principal_id="ids:olga"),
        "api key {sam_key}: principal_id differs from the log"),
    "key label changed": (_sql(t.api_keys, "rita_key", label="ci"),
                          "api key {rita_key}: label differs from the log"),
    "principal re-enabled": (_sql(t.principals, "vic", disabled=False),
                             "principal {vic} (vic): disabled differs from the log"),
    "principal renamed": (_sql(t.principals, "rita", name="rita2"),
                          "principal {rita} (rita2): name differs from the log"),
    "subject reference replaced": (_sql(t.principals, "sam", subject_ref="0" * 64),
                                   "principal {sam} (" + SUBJECT + "): subject_ref differs"),
    "principal deleted": (_delete_principal,
                          "principal {nokey}: logged (entry 4) but missing from the "
                          "principals table"),
    "facet outcome edited": (_facet(0, outcome="approved"),
                             "decision {d0}: facet outcome is 'approved', the logged "
                             "records give 'rejected'"),
    "facet adverse flag cleared": (_facet(2, adverse=False),
                                   "decision {d2}: facet adverse is False"),
    "facet review status edited": (_facet(2, review_status="confirmed"),
                                   "decision {d2}: facet review_status is 'confirmed', the "
                                   "logged records give 'pending'"),
    "facet reliability edited": (_facet(0, reliability="normal"),
                                 "decision {d0}: facet reliability is 'normal'"),
    "facet anchor hits cleared": (_facet(0, anchor_hits=0),
                                  "decision {d0}: facet anchor_hits is 0"),
    "facet row deleted": (_delete_facet, "decision {d1}: its facets row is missing"),
    "decision inserted without entry": (
        _insert_decision,
        "record decisions:00000000-0000-0000-0000-0000000000dd: has no log entry"),
    "access event inserted without entry": (
        _insert_access,
        "record access_events:00000000-0000-0000-0000-0000000000ee: has no log entry"),
    "pending review marked decided": (_sql(t.reviews, "pending", status="confirmed"),
                                      "review {pending}: status 'confirmed' but it has no "
                                      "logged decision"),
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_tampering_is_named(store: Store, case: str) -> None:
    ids = _populate(store)
    change, expected = TAMPERING[case]
    names = {k: v for k, v in ids.items() if isinstance(v, str)}
    names.update({f"d{i}": d for i, d in enumerate(ids["decisions"])})
    with store.engine.begin() as conn:
        change(conn, ids)
    report = _verify(store)
    assert not report.ok
    assert report.problems[0].startswith(expected.format(**names)), report.problems[0]
    # The same problem whether the entries are read in one process or several.
    assert _verify(store, workers=2).problems[0] == report.problems[0]


def test_a_forged_state_entry_body_is_refused(store: Store) -> None:
    """A state entry whose body names another record than its row fails the scan."""
    ids = _populate(store)
    with store.engine.begin() as conn:
        conn.execute(update(t.log_entries).where(t.log_entries.c.idx == 1)
                     .values(record_id=f"principals:{ids['sam']}"))
    problem = _verify(store).problems[0]
    assert problem.startswith("entry 1 (principal_recorded") and "state entry" in problem


# ---------------------------------------------------------------- databases before 0005
def _at_0004(settings: Settings) -> None:
    """A database at revision 0004 holding principals and keys as the code of then wrote
    them (no log entries): a subject, a disabled operator, an active and a revoked key."""
    engine = make_engine(settings.resolved_database_url())
    cfg = Config()
    cfg.set_main_option("script_location",
                        str(resources.files("xai_sandbox.store").joinpath("migrations")))
    try:
        with writer(engine).begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0004")
            now = datetime.now(UTC)
            conn.execute(insert(t.principals), [
                {"id": "p-1", "name": "old-subject", "roles": "subject",
                 "subject_ref": "f" * 64, "created_at": now, "disabled": False},
                {"id": "p-2", "name": "old-operator", "roles": "auditor,operator",
                 "subject_ref": None, "created_at": now, "disabled": True}])
            conn.execute(insert(t.api_keys), [
                {"id": "k00000000001", "principal_id": "p-1", "secret_sha256": _sha("a"),
                 "label": "default", "created_at": now, "revoked_at": None},
                {"id": "k00000000002", "principal_id": "p-2", "secret_sha256": _sha("b"),
                 "label": "cli", "created_at": now, "revoked_at": now}])
    finally:
        engine.dispose()


def test_a_database_made_before_0005_verifies_after_the_upgrade(settings: Settings) -> None:
    _at_0004(settings)
    store = Store(settings)  # upgrades to head: 0005 logs the four records once
    try:
        with store.engine.connect() as conn:
            rows = conn.execute(select(t.log_entries).order_by(t.log_entries.c.idx)).all()
            tables = {"principal_recorded": t.principals, "api_key_recorded": t.api_keys}
            for row in rows:
                entry = json.loads(row.body)
                table = tables[row.kind]
                record = conn.execute(select(table).where(
                    table.c.id == row.record_id.partition(":")[2])).mappings().one()
                # The migration's frozen rule writes what the accounts code writes.
                assert entry == state_entry(row.kind, dict(record), "existing", entry["at"])
        assert [r.record_id for r in rows] == ["principals:p-1", "principals:p-2",
                                               "api_keys:k00000000001", "api_keys:k00000000002"]
        store.log.checkpoint()
        _populate(store)
        report = _verify(store)
        assert report.ok, report.problems
        assert (report.principals, report.api_keys) == (7, 7)
        with store.engine.begin() as conn:
            conn.execute(update(t.principals).where(t.principals.c.id == "p-1")
                         .values(roles="admin,subject"))
        assert _verify(store).problems[0].startswith(
            "principal p-1 (old-subject): roles differ from the log (entry 0)")
    finally:
        store.close()


def test_the_migration_logs_nothing_on_an_empty_database(store: Store) -> None:
    path = (Path(__file__).resolve().parents[2] / "src/xai_sandbox/store/migrations/versions/"
            "0005_accounts_log.py")
    spec = importlib.util.spec_from_file_location("migration_0005", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with store.writer.begin() as conn:
        assert module.log_existing(conn) == []
    assert store.log.size() == 0
    # Run again over principals the API made, it appends their state once more, and the
    # store still verifies (the newest entry of each record is its state).
    Accounts(store.engine, store.writer).create_principal("ann", ["auditor"])
    with store.writer.begin() as conn:
        assert module.log_existing(conn) == [1]
    assert _verify(store).ok


# ---------------------------------------------------------------- through the CLI
def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XAI_SANDBOX_DATA_DIR": str(settings.data_dir),
           "XAI_SANDBOX_LOG_ORIGIN": settings.log_origin, "COLUMNS": "200"}
    if settings.database_url:
        env["XAI_SANDBOX_DATABASE_URL"] = settings.database_url
    return subprocess.run([sys.executable, "-m", "xai_sandbox.cli", *args],
                          capture_output=True, text=True, env=env, timeout=300)


def test_cli_users_are_logged_and_a_tampered_role_fails_verify(store: Store,
                                                              settings: Settings) -> None:
    made = _cli(settings, "users", "create", "carla", "--role", "subject",
                "--subject-id", "carla-1")
    assert made.returncode == 0, made.stdout + made.stderr
    ok = _cli(settings, "audit", "verify")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    pid = _principal_of(store, "carla")
    with store.engine.begin() as conn:
        conn.execute(update(t.principals).where(t.principals.c.id == pid)
                     .values(roles="admin,subject"))
    bad = _cli(settings, "audit", "verify")
    assert bad.returncode == 1
    assert f"principal {pid} (carla): roles differ from the log" in bad.stdout


def test_writes_during_verification_are_not_taken_for_tampering(store: Store) -> None:
    """Verification compares the tables with the log as of one snapshot: principals,
    keys, decisions, reports and reviews written while it runs wait for the next run."""
    ids = _populate(store)
    accounts: Accounts = ids["accounts"]
    writes = iter(range(100))

    def write_meanwhile(done: int, total: int) -> None:
        n = next(writes)
        accounts.create_principal(f"late-{n}", ["auditor"])
        accounts.issue_key(f"late-{n}")
        accounts.set_roles("olga", ["operator"] if n % 2 else ["operator", "auditor"])
        decided = store.record_decision(model_key="credit@1", subject_id=f"late-{n}",
                                        inputs={}, output={"decision": "rejected"},
                                        policy_version="p")
        store.record_report(decided.decision_id, {"anchors": {"hits": ["a"]}}, "r/1")
        store.record_report(ids["decisions"][1], {"anchors": {"hits": []}}, "r/1")
        review, _ = store.request_review(decided.decision_id, "s", "why")
        store.decide_review(review, outcome="confirmed", reviewer="r", role="reviewer",
                            rationale="ok")

    report = verify_log(store.engine, store.keys.verifiers(), store.log.origin, workers=1,
                        progress=write_meanwhile)
    assert report.ok, report.problems
    assert next(writes) > 0 and _verify(store).ok


def test_cli_role_changes_and_disabling_are_logged(store: Store, settings: Settings) -> None:
    assert _cli(settings, "users", "create", "rolf", "--role", "reviewer").returncode == 0
    changed = _cli(settings, "users", "roles", "rolf", "--role", "reviewer", "--role",
                   "auditor")
    assert changed.returncode == 0, changed.stdout + changed.stderr
    off = _cli(settings, "users", "disable", "rolf")
    assert off.returncode == 0, off.stdout + off.stderr
    with store.engine.connect() as conn:
        row = conn.execute(select(t.principals).where(t.principals.c.name == "rolf")).one()
    assert set(str(row.roles).split(",")) == {"reviewer", "auditor"} and row.disabled
    # Both changes are log entries: the store verifies, and undoing either in the table
    # is named.
    assert _cli(settings, "audit", "verify").returncode == 0
    with store.engine.begin() as conn:
        conn.execute(update(t.principals).where(t.principals.c.name == "rolf")
                     .values(disabled=False))
    bad = _cli(settings, "audit", "verify")
    assert bad.returncode == 1 and "(rolf): disabled differs from the log" in bad.stdout
    unknown = _cli(settings, "users", "roles", "nobody", "--role", "auditor")
    assert unknown.returncode == 2 and "nobody" in unknown.stdout + unknown.stderr
