"""Named read and write queries that the service needs beyond the store's repositories:
the gauges of ``/metrics``, a range of log entries, the signed checkpoints the console
lists, and the console's sign-in sessions.

Each function takes the :class:`~xai_sandbox.store.Store` and returns plain values, so no
SQL runs in a request handler.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, insert, select, update

import xai_sandbox.store.tables as t

if TYPE_CHECKING:
    from xai_sandbox.store import Store

__all__ = ["SessionRow", "checkpoint_notes", "end_session", "find_session", "log_entries",
           "open_alerts_by_kind", "pending_deliveries", "recent_checkpoints", "start_session"]


# ---------------------------------------------------------------------- monitoring
def open_alerts_by_kind(store: Store) -> dict[str, int]:
    """Unacknowledged alerts, counted by kind."""
    with store.engine.connect() as conn:
        rows = conn.execute(select(t.alerts.c.kind, func.count()).where(
            t.alerts.c.acknowledged_at.is_(None)).group_by(t.alerts.c.kind)).all()
    return {kind: int(n) for kind, n in rows}


def pending_deliveries(store: Store) -> int:
    """Webhook deliveries not yet accepted by their receiver."""
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(t.alert_deliveries).where(
            t.alert_deliveries.c.status == "pending")).scalar_one())


# ---------------------------------------------------------------------- audit log
def log_entries(store: Store, start: int, end: int) -> list[dict[str, Any]]:
    """Log entries ``start`` to ``end`` (exclusive) in order: index, kind, record id,
    leaf hash (base64) and the parsed body."""
    with store.engine.connect() as conn:
        rows = conn.execute(select(t.log_entries).where(
            t.log_entries.c.idx >= start, t.log_entries.c.idx < end)
            .order_by(t.log_entries.c.idx)).mappings().all()
    return [{"index": r["idx"], "kind": r["kind"], "record_id": r["record_id"],
             "leaf_hash": base64.b64encode(bytes(r["leaf_hash"])).decode(),
             "body": json.loads(bytes(r["body"]))} for r in rows]


def recent_checkpoints(store: Store, limit: int = 100) -> list[tuple[int, datetime]]:
    """The latest signed checkpoints, largest first: (size, signed at)."""
    with store.engine.connect() as conn:
        return [(r.size, r.signed_at) for r in conn.execute(
            select(t.checkpoints.c.size, t.checkpoints.c.signed_at)
            .order_by(t.checkpoints.c.size.desc()).limit(limit))]


def checkpoint_notes(store: Store, sizes: Iterable[int]) -> dict[int, str]:
    """The signed notes of the checkpoints of ``sizes`` (a size without one is absent)."""
    with store.engine.connect() as conn:
        return {r.size: r.note for r in conn.execute(
            select(t.checkpoints.c.size, t.checkpoints.c.note).where(
                t.checkpoints.c.size.in_(list(sizes))))}


# ---------------------------------------------------------------------- console sessions
@dataclass(frozen=True)
class SessionRow:
    """A live session's row with its principal (key not revoked, principal enabled)."""

    csrf: str
    expires_at: datetime | str
    key_id: str
    principal_id: str
    name: str
    roles: str
    subject_ref: str | None


def start_session(store: Store, *, token_sha256: str, principal_id: str, key_id: str,
                  csrf: str, now: datetime, expires_at: datetime) -> None:
    """Record a new session; sessions past their end are kept a day (for a look in the
    database), then go."""
    with store.writer.begin() as conn:
        conn.execute(delete(t.console_sessions).where(
            t.console_sessions.c.expires_at < now - timedelta(days=1)))
        conn.execute(insert(t.console_sessions).values(
            token_sha256=token_sha256, principal_id=principal_id, key_id=key_id,
            csrf=csrf, created_at=now, expires_at=expires_at))


def find_session(store: Store, token_sha256: str) -> SessionRow | None:
    """The session of a token's digest, unless it was ended, its key revoked or its
    principal disabled (its expiry is the caller's to check)."""
    s, k, p = t.console_sessions, t.api_keys, t.principals
    with store.engine.connect() as conn:
        row = conn.execute(
            select(s.c.csrf, s.c.expires_at, s.c.key_id, p.c.id, p.c.name, p.c.roles,
                   p.c.subject_ref)
            .join(p, p.c.id == s.c.principal_id).join(k, k.c.id == s.c.key_id)
            .where(s.c.token_sha256 == token_sha256, s.c.ended_at.is_(None),
                   k.c.revoked_at.is_(None), p.c.disabled.is_(False))).first()
    if row is None:
        return None
    return SessionRow(csrf=row.csrf, expires_at=row.expires_at, key_id=row.key_id,
                      principal_id=row.id, name=row.name, roles=row.roles,
                      subject_ref=row.subject_ref)


def end_session(store: Store, token_sha256: str, at: datetime) -> None:
    """End the session of a token's digest (once: an ended session stays as it ended)."""
    with store.writer.begin() as conn:
        conn.execute(update(t.console_sessions).where(
            t.console_sessions.c.token_sha256 == token_sha256,
            t.console_sessions.c.ended_at.is_(None)).values(ended_at=at))
