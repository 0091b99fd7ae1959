"""Principals and their bearer API keys.

A key reads ``xai_<key id>_<secret>``: the key id finds the row, the secret (32 random
bytes) is kept only as its SHA-256 and compared in constant time. A high-entropy secret
needs no slow password hash; a stolen table gives no usable key.

Who may do what is in the audit log: creating a principal, changing its roles, disabling
or enabling it, issuing and revoking a key each append the record's new state to the log
in the transaction that makes the change, and ``audit verify`` replays those entries
against the tables.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, Table, insert, select, update

import xai_sandbox.store.tables as t
from xai_sandbox.errors import ConflictError, InvalidInputError, NotFoundError
from xai_sandbox.store.entries import state_entry
from xai_sandbox.store.log import append_entries

__all__ = ["ROLES", "Accounts", "Principal"]

ROLES = ("subject", "operator", "reviewer", "compliance_officer", "auditor", "admin")
_KEY = re.compile(r"^xai_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")


@dataclass(frozen=True)
class Principal:
    id: str
    name: str
    roles: frozenset[str]
    subject_ref: str | None
    key_id: str

    def has(self, *roles: str) -> bool:
        return bool(self.roles & set(roles))


class Accounts:
    """Create principals and keys, and resolve a presented key to its principal."""

    def __init__(self, engine: Engine, writer: Engine, cache_seconds: float = 0.0) -> None:
        self.engine = engine
        self.writer = writer
        # A service may remember a good key for a few seconds (a revocation then takes
        # effect within that time); the cache is keyed by the key's hash, never the key.
        self.cache_seconds = cache_seconds
        self._cache: dict[bytes, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def create_principal(self, name: str, roles: Iterable[str],
                         subject_ref: str | None = None) -> str:
        """A new principal (``subject_ref``: the subject's pseudonymous reference, for
        and only for the subject role); returns its id."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise InvalidInputError("name", "must be 1-128 of letters, digits, '.', '_', '@', "
                                    "'-'", name)
        wanted = _roles(roles)
        if ("subject" in wanted) != (subject_ref is not None):
            raise InvalidInputError("subject_id", "is required for, and only for, the "
                                    "subject role", subject_ref)
        pid = str(uuid.uuid4())
        now = datetime.now(UTC)
        with self.writer.begin() as conn:
            if conn.execute(select(t.principals.c.id).where(t.principals.c.name == name)
                            ).first() is not None:
                raise ConflictError("name", "is already taken", name)
            conn.execute(insert(t.principals).values(
                id=pid, name=name, roles=",".join(wanted), subject_ref=subject_ref,
                created_at=now, disabled=False))
            _log(conn, t.principals, pid, "created", now)
        return pid

    def set_roles(self, name: str, roles: Iterable[str]) -> None:
        """Replace the roles of principal ``name``. The subject role stays with, and only
        with, a principal that has a subject reference."""
        wanted = _roles(roles)
        now = datetime.now(UTC)
        with self.writer.begin() as conn:
            row = _principal(conn, name)
            if ("subject" in wanted) != (row["subject_ref"] is not None):
                raise InvalidInputError("roles", "must hold 'subject' exactly when the "
                                        "principal has a subject reference", wanted)
            conn.execute(update(t.principals).where(t.principals.c.id == row["id"])
                         .values(roles=",".join(wanted)))
            _log(conn, t.principals, row["id"], "roles_changed", now)
        self._forget()

    def set_disabled(self, name: str, disabled: bool = True) -> None:
        """Disable principal ``name`` (its keys and console sessions stop working at once)
        or enable it again."""
        now = datetime.now(UTC)
        with self.writer.begin() as conn:
            row = _principal(conn, name)
            if bool(row["disabled"]) == bool(disabled):
                raise ConflictError("disabled", "is already the principal's state", disabled)
            conn.execute(update(t.principals).where(t.principals.c.id == row["id"])
                         .values(disabled=bool(disabled)))
            _log(conn, t.principals, row["id"], "disabled" if disabled else "enabled", now)
        self._forget()

    def principal_id(self, name: str) -> str:
        with self.engine.connect() as conn:
            pid = conn.execute(select(t.principals.c.id).where(t.principals.c.name == name)
                               ).scalar()
        if pid is None:
            raise NotFoundError("name", "must be an existing principal", name)
        return str(pid)

    def issue_key(self, name: str, label: str = "default") -> str:
        """A new key for principal ``name``; the only time the secret is seen."""
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        with self.writer.begin() as conn:
            pid = _principal(conn, name)["id"]
            conn.execute(insert(t.api_keys).values(
                id=key_id, principal_id=pid, secret_sha256=_digest(secret),
                label=label[:128] or "default", created_at=now))
            _log(conn, t.api_keys, key_id, "created", now)
        return f"xai_{key_id}_{secret}"

    def revoke_key(self, key_id: str) -> None:
        now = datetime.now(UTC)
        with self.writer.begin() as conn:
            done = conn.execute(update(t.api_keys).where(
                t.api_keys.c.id == key_id, t.api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now))
            if done.rowcount != 1:
                raise NotFoundError("key_id", "must be an active key", key_id)
            _log(conn, t.api_keys, key_id, "revoked", now)
        self._forget()

    def _forget(self) -> None:
        """Drop this process's remembered keys, so a change here applies at once here."""
        with self._lock:
            self._cache.clear()

    def principals(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.principals.c.name, t.principals.c.roles,
                                       t.principals.c.created_at)
                                .order_by(t.principals.c.created_at)).all()
        return [{"name": r.name, "roles": r.roles.split(","), "created_at": r.created_at}
                for r in rows]

    def authenticate(self, presented: str) -> Principal | None:
        """The principal of an active key, or ``None``."""
        if self.cache_seconds > 0:
            tag = hashlib.sha256(presented.encode()).digest()
            now = time.monotonic()
            with self._lock:
                hit = self._cache.get(tag)
            if hit is not None and hit[0] > now:
                return hit[1]
            found = self._lookup(presented)
            if found is not None:
                with self._lock:
                    if len(self._cache) >= 10_000:
                        self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
                        if len(self._cache) >= 10_000:
                            self._cache.clear()
                    self._cache[tag] = (now + self.cache_seconds, found)
            return found
        return self._lookup(presented)

    def _lookup(self, presented: str) -> Principal | None:
        m = _KEY.match(presented)
        if m is None:
            return None
        key_id, secret = m.groups()
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t.api_keys.c.secret_sha256, t.principals)
                .join(t.principals, t.principals.c.id == t.api_keys.c.principal_id)
                .where(t.api_keys.c.id == key_id, t.api_keys.c.revoked_at.is_(None),
                       t.principals.c.disabled.is_(False))).mappings().first()
        if row is None or not hmac.compare_digest(row["secret_sha256"], _digest(secret)):
            return None
        return Principal(id=row["id"], name=row["name"], roles=frozenset(row["roles"].split(",")),
                         subject_ref=row["subject_ref"], key_id=key_id)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _roles(roles: Iterable[str]) -> list[str]:
    wanted = sorted(set(roles))
    unknown = [r for r in wanted if r not in ROLES]
    if not wanted or unknown:
        raise InvalidInputError("roles", f"must be one or more of {list(ROLES)}",
                                unknown or wanted)
    return wanted


def _principal(conn: Connection, name: str) -> dict[str, Any]:
    row = conn.execute(select(t.principals).where(t.principals.c.name == name)
                       ).mappings().first()
    if row is None:
        raise NotFoundError("name", "must be an existing principal", name)
    return dict(row)


def _log(conn: Connection, table: Table, record_id: str, change: str, at: datetime) -> None:
    """Append the record's state as the table now holds it, in ``conn``'s transaction."""
    row = conn.execute(select(table).where(table.c.id == record_id)).mappings().one()
    kind = "principal_recorded" if table is t.principals else "api_key_recorded"
    append_entries(conn, [(f"{table.name}:{record_id}", state_entry(kind, dict(row), change, at))])
