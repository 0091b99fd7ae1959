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

from xai_sandbox.errors import InvalidInputError
from xai_sandbox.store import Store
from xai_sandbox.store.accounts import Accounts, Principal
from xai_sandbox.store.queries import end_session, find_session, start_session

__all__ = ["Session", "Sessions"]


@dataclass(frozen=True)
class Session:
    token: str
    principal: Principal
    csrf: str
    expires_at: datetime


class Sessions:
    """Start, resolve and end console sessions."""

    def __init__(self, store: Store, accounts: Accounts, *, hours: float = 8.0) -> None:
        if not 0 < hours <= 24 * 7:
            raise InvalidInputError("hours", "must be more than 0 and at most 168", hours)
        self.store = store
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
        start_session(self.store, token_sha256=_digest(token), principal_id=who.id,
                      key_id=who.key_id, csrf=csrf, now=now, expires_at=now + self.lifetime)
        return Session(token, who, csrf, now + self.lifetime)

    def resolve(self, token: str | None) -> Session | None:
        """The live session of a cookie's token, or ``None``."""
        if not token or len(token) > 64:
            return None
        row = find_session(self.store, _digest(token))
        if row is None:
            return None
        expires = row.expires_at if isinstance(row.expires_at, datetime) else \
            datetime.fromisoformat(str(row.expires_at))
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        if expires <= datetime.now(UTC):
            return None
        who = Principal(id=row.principal_id, name=row.name,
                        roles=frozenset(row.roles.split(",")), subject_ref=row.subject_ref,
                        key_id=row.key_id)
        return Session(token, who, row.csrf, expires)

    def end(self, token: str) -> None:
        """Sign out: the token no longer resolves."""
        end_session(self.store, _digest(token), datetime.now(UTC))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
