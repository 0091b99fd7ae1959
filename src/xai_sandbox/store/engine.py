"""Engines with the durability settings the store relies on, and migrations.

SQLite (the default, a file created on first use) runs in WAL mode with
``synchronous=FULL``, so an acknowledged write is on disk; its transactions begin
IMMEDIATE so writers from several processes queue instead of failing. PostgreSQL is used
by URL (``postgresql+psycopg://...``). Alembic migrates either to the current schema on
open.
"""

from __future__ import annotations

import threading
from importlib import resources
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, text

from xai_sandbox.errors import InvalidInputError

__all__ = ["make_engine", "migrate", "schema_current", "writer"]


def make_engine(url: str) -> Engine:
    """An engine with the durability settings this store relies on."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        engine = create_engine(url, connect_args={"timeout": 60, "isolation_level": None})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        # Writers of this process queue on a lock of their own before taking SQLite's:
        # SQLite's busy handler waits by sleeping in growing steps (up to 100 ms), so
        # threads that met a held lock there would wait far longer than the write takes.
        writing = threading.Lock()

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            # Writers take the write lock up front, so concurrent writers queue instead of
            # deadlocking on a lock upgrade; readers begin deferred and never block them.
            if not conn.get_execution_options().get("xai_write", False):
                conn.exec_driver_sql("BEGIN")
                return
            if conn.info.get("xai_writing"):  # a second transaction on this connection
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                return
            writing.acquire()
            conn.info["xai_writing"] = True
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            except BaseException:
                conn.info.pop("xai_writing", None)
                writing.release()
                raise

        @event.listens_for(engine, "checkin")
        def _end(_dbapi_conn: Any, record: Any) -> None:
            # After the commit (or rollback) has returned and the connection is back.
            if record.info.pop("xai_writing", False):
                writing.release()

        return engine
    if url.startswith(("postgresql", "postgres")):
        return create_engine(url, pool_pre_ping=True)
    raise InvalidInputError("database_url", "must be a sqlite:/// or postgresql+psycopg:// URL",
                            url.split("@")[-1])


def writer(engine: Engine) -> Engine:
    """The same engine (and pool) for write transactions: ``with writer(e).begin()``."""
    return engine.execution_options(xai_write=True)


# pg_advisory_xact_lock key of the migrations ("xai-migr" as 8 bytes).
MIGRATION_LOCK = int.from_bytes(b"xai-migr", "big") & 0x7FFF_FFFF_FFFF_FFFF


def migrate(engine: Engine) -> None:
    """Bring the database to the current schema with Alembic, once: processes that start
    together (several API containers) queue on a lock, and the later ones find the schema
    current. On PostgreSQL the lock is a transaction-scoped advisory lock; on SQLite the
    write transaction (BEGIN IMMEDIATE) is the lock."""
    cfg = Config()
    cfg.set_main_option("script_location",
                        str(resources.files("xai_sandbox.store").joinpath("migrations")))
    with writer(engine).begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def schema_current(engine: Engine) -> bool:
    """Whether the database is at the schema this code expects (for readiness)."""
    script = ScriptDirectory(str(resources.files("xai_sandbox.store").joinpath("migrations")))
    with engine.connect() as conn:
        return set(MigrationContext.configure(conn).get_current_heads()) == set(
            script.get_heads())
