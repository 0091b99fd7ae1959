"""What every part of the store shares: its engine, audit log and keys, subjects'
pseudonyms, retention, models, and how a record is written with its log entry.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, insert, select

import xai_sandbox.store.tables as t
from xai_sandbox.audit.canonical import canonical_json
from xai_sandbox.audit.log import Receipt
from xai_sandbox.audit.notes import KeyStore
from xai_sandbox.errors import ConflictError, InvalidInputError, NotFoundError
from xai_sandbox.settings import Settings
from xai_sandbox.store.engine import make_engine, migrate, writer
from xai_sandbox.store.entries import ENTRY_BUILDERS
from xai_sandbox.store.fields import check_text, utcnow
from xai_sandbox.store.log import AuditLog

__all__ = ["StoreCore"]


class StoreCore:
    """The engine, log and keys of a store, and the helpers of its record sections.

    Parameters
    ----------
    settings:
        Where the database and keys live, the log's origin and the retention periods.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.engine = make_engine(self.settings.resolved_database_url())
        self.writer = writer(self.engine)
        migrate(self.engine)
        key_path = self.settings.resolved_signing_key()
        self.keys = KeyStore(key_path, self.settings.log_origin.replace(" ", "_"))
        self.log = AuditLog(self.engine, self.keys, self.settings.log_origin,
                            writer=self.writer)
        self._pepper_path = key_path.with_name("subject-pepper.bin")

    def close(self) -> None:
        self.engine.dispose()


    # ------------------------------------------------------------------ helpers
    def subject_ref(self, subject_id: str) -> str:
        """The pseudonymous reference of a subject: HMAC-SHA256 with a secret pepper."""
        check_text("subject_id", subject_id, 256)
        return hmac.new(self._pepper(), subject_id.encode(), hashlib.sha256).hexdigest()

    def _pepper(self) -> bytes:
        path = self._pepper_path
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                return path.read_bytes()
            except OSError as exc:  # a read-only secrets folder: the file must be given
                raise InvalidInputError(
                    "signing_key", "its folder must hold subject-pepper.bin (32 random "
                    "bytes, shared by every process) when it cannot be written",
                    str(path.parent)) from exc
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_bytes(32))
                fh.flush()
                os.fsync(fh.fileno())
        return path.read_bytes()

    def retain_until(self, start: datetime) -> datetime:
        """The longest retention period that applies, from ``start``."""
        return start + timedelta(days=max(self.settings.retention_days().values()))

    def _record(self, conn: Connection, table: Any, row: dict[str, Any], kind: str,
                key: str = "id") -> int:
        conn.execute(insert(table).values(**row))
        entry = ENTRY_BUILDERS[kind](row)
        return self.log.append(conn, [(f"{table.name}:{row[key]}", entry)])[0]

    def leaf_of(self, record_id: str, conn: Connection | None = None) -> int:
        """The leaf index of the first log entry of a record ('table:id')."""
        query = select(t.log_entries.c.idx).where(
            t.log_entries.c.record_id == record_id).order_by(t.log_entries.c.idx).limit(1)
        if conn is not None:
            idx = conn.execute(query).scalar()
        else:
            with self.engine.connect() as own:
                idx = own.execute(query).scalar()
        if idx is None:
            raise InvalidInputError("record_id", "must have a log entry", record_id)
        return int(idx)

    def logged_at(self, record_id: str) -> datetime:
        """When the first log entry of a record ('table:id') was appended."""
        with self.engine.connect() as conn:
            at = conn.execute(select(t.log_entries.c.appended_at).where(
                t.log_entries.c.record_id == record_id).order_by(t.log_entries.c.idx)
                .limit(1)).scalar()
        if at is None:
            raise InvalidInputError("record_id", "must have a log entry", record_id)
        return at  # type: ignore[no-any-return]

    def _require_decision(self, conn: Connection, decision_id: str) -> None:
        if conn.execute(select(t.decisions.c.id).where(t.decisions.c.id == decision_id)
                        ).first() is None:
            raise NotFoundError("decision_id", "must be a recorded decision", decision_id)


    # ------------------------------------------------------------------ models
    def register_model(self, model_id: str, version: str, fingerprint: str,
                       schema: Mapping[str, Any] | None = None,
                       spec: Mapping[str, Any] | None = None) -> tuple[str, int]:
        """Record a model; returns its key ``id@version`` and the leaf index.

        ``spec`` says how to load the model again (a built-in name or a model text) and
        carries its explanation policy; it is stored as canonical JSON and committed to by
        its hash in the log.
        """
        check_text("model_id", model_id)
        check_text("version", version)
        if not isinstance(fingerprint, str) or len(fingerprint) != 64:
            raise InvalidInputError("fingerprint", "must be a SHA-256 hex digest", fingerprint)
        key = f"{model_id}@{version}"
        row = {"key": key, "model_id": model_id, "version": version, "fingerprint": fingerprint,
               "schema_json": canonical_json(schema).decode() if schema is not None else None,
               "registered_at": utcnow(),
               "spec_json": canonical_json(dict(spec)).decode() if spec is not None else None}
        with self.writer.begin() as conn:
            existing = conn.execute(select(t.models.c.fingerprint)
                                    .where(t.models.c.key == key)).scalar()
            if existing is not None:
                if existing != fingerprint:
                    raise ConflictError("version", "is registered with another "
                                            "fingerprint; register a new version", key)
                idx = conn.execute(select(t.log_entries.c.idx).where(
                    t.log_entries.c.record_id == f"models:{key}")).scalar_one()
                return key, int(idx)
            return key, self._record(conn, t.models, row, "model_registered", key="key")

    def models(self) -> list[dict[str, Any]]:
        """Every registered model, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.models).order_by(t.models.c.registered_at))
            return [dict(r) for r in rows.mappings()]

    # ------------------------------------------------------------------ receipts
    def receipt(self, leaf_index: int) -> Receipt:
        return self.log.receipt(leaf_index)


