"""The console's verification runs as rows, so that every API process sees the same runs
and their progress (the page that polls may reach another process than the one that
runs the verification)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, text, update

from xai_sandbox.store import tables as t
from xai_sandbox.store.entries import rfc3339
from xai_sandbox.store.store import Store

__all__ = ["finish_run", "get_run", "report_progress", "start_run"]

# A run whose heartbeat is older than this is taken for dead (its process stopped).
STALE = timedelta(seconds=60)
_LOCK = int.from_bytes(b"xai-vrun", "big") & 0x7FFF_FFFF_FFFF_FFFF


def start_run(store: Store, actor: str) -> tuple[dict[str, Any], bool]:
    """The run in progress, or a new one; ``True`` when this call started it (one at a
    time across processes: PostgreSQL serialises the check on an advisory lock, SQLite
    on its write lock)."""
    now = datetime.now(UTC)
    runs = t.verification_runs
    with store.writer.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK})
        live = conn.execute(select(runs).where(
            runs.c.status == "running", runs.c.heartbeat_at > now - STALE)
            .order_by(runs.c.started_at).limit(1)).mappings().first()
        if live is not None:
            return _plain(dict(live)), False
        row = {"id": str(uuid.uuid4()), "actor": actor, "started_at": now,
               "heartbeat_at": now, "status": "running", "done": 0, "total": 0,
               "result_json": None}
        conn.execute(runs.insert().values(**row))
    return _plain(row), True


def report_progress(store: Store, run_id: str, done: int, total: int) -> None:
    with store.writer.begin() as conn:
        conn.execute(update(t.verification_runs).where(t.verification_runs.c.id == run_id)
                     .values(done=done, total=total, heartbeat_at=datetime.now(UTC)))


def finish_run(store: Store, run_id: str, status: str, result: Mapping[str, Any]) -> None:
    with store.writer.begin() as conn:
        conn.execute(update(t.verification_runs).where(t.verification_runs.c.id == run_id)
                     .values(status=status, result_json=json.dumps(dict(result)),
                             heartbeat_at=datetime.now(UTC)))


def get_run(store: Store, run_id: str) -> dict[str, Any] | None:
    runs = t.verification_runs
    with store.engine.connect() as conn:
        row = conn.execute(select(runs).where(runs.c.id == run_id)).mappings().first()
    if row is None:
        return None
    found = _plain(dict(row))
    stale = _aware(row["heartbeat_at"]) < datetime.now(UTC) - STALE
    if found["status"] == "running" and stale:
        found["status"] = "error"
        found["result"] = {"problems": ["the process running this verification stopped; "
                                        "start it again"]}
    return found


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _plain(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "started_by": row["actor"],
            "started_at": rfc3339(row["started_at"]) or "", "status": row["status"],
            "done": row["done"], "total": row["total"],
            "result": json.loads(row["result_json"]) if row["result_json"] else {}}
