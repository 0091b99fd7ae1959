"""Web console sign-ins: an API key, presented once, becomes a session.

The browser holds a random 256-bit token in an HttpOnly, SameSite=Strict cookie; the
database holds only its SHA-256, the key it was made from and the session's CSRF token.
A session ends at sign-out, at its expiry, or when its key is revoked or its principal
disabled (checked on every request).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, delete, insert, select, update

from xai_sandbox.errors import InvalidInputError
from xai_sandbox.store import tables as t
from xai_sandbox.store.accounts import Accounts, Principal

__all__ = ["Session", "Sessions"]


@dataclass(frozen=True)
class Session:
    token: str
    principal: Principal
    csrf: str
    expires_at: datetime


class Sessions:
    """Start, resolve and end console sessions."""

    def __init__(self, engine: Engine, writer: Engine, accounts: Accounts, *,
                 hours: float = 8.0) -> None:
        if not 0 < hours <= 24 * 7:
            raise InvalidInputError("hours", "must be more than 0 and at most 168", hours)
        self.engine = engine
        self.writer = writer
        self.accounts = accounts
        self.lifetime = timedelta(hours=hours)

    def start(self, presented_key: str) -> Session | None:
        """A new session for an active key, or ``None`` for an unknown or revoked one."""
        who = self.accounts.authenticate(presented_key.strip())
        if who is None:
            return None
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        with self.writer.begin() as conn:
            # Sessions past their end are kept a day (for a look in the database), then go.
            conn.execute(delete(t.console_sessions).where(
                t.console_sessions.c.expires_at < now - timedelta(days=1)))
            conn.execute(insert(t.console_sessions).values(
                token_sha256=_digest(token), principal_id=who.id, key_id=who.key_id,
                csrf=csrf, created_at=now, expires_at=now + self.lifetime))
        return Session(token, who, csrf, now + self.lifetime)

    def resolve(self, token: str | None) -> Session | None:
        """The live session of a cookie's token, or ``None``."""
        if not token or len(token) > 64:
            return None
        s, k, p = t.console_sessions, t.api_keys, t.principals
        with self.engine.connect() as conn:
            row = conn.execute(
                select(s.c.csrf, s.c.expires_at, s.c.key_id, p.c.id, p.c.name, p.c.roles,
                       p.c.subject_ref)
                .join(p, p.c.id == s.c.principal_id).join(k, k.c.id == s.c.key_id)
                .where(s.c.token_sha256 == _digest(token), s.c.ended_at.is_(None),
                       k.c.revoked_at.is_(None), p.c.disabled.is_(False))).first()
        if row is None:
            return None
        expires = row.expires_at if isinstance(row.expires_at, datetime) else \
            datetime.fromisoformat(str(row.expires_at))
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        if expires <= datetime.now(UTC):
            return None
        who = Principal(id=row.id, name=row.name, roles=frozenset(row.roles.split(",")),
                        subject_ref=row.subject_ref, key_id=row.key_id)
        return Session(token, who, row.csrf, expires)

    def end(self, token: str) -> None:
        """Sign out: the token no longer resolves."""
        with self.writer.begin() as conn:
            conn.execute(update(t.console_sessions).where(
                t.console_sessions.c.token_sha256 == _digest(token),
                t.console_sessions.c.ended_at.is_(None)).values(ended_at=datetime.now(UTC)))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
