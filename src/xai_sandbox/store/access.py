"""Who read or exported which record, and ad hoc explanations: logged by the hashes of
their input and result.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import insert, select

import xai_sandbox.store.tables as t
from xai_sandbox.errors import InvalidInputError
from xai_sandbox.store.core import StoreCore
from xai_sandbox.store.entries import ENTRY_BUILDERS
from xai_sandbox.store.fields import check_text, utcnow

__all__ = ["AccessRecords"]


class AccessRecords(StoreCore):
    """The store's access events and ad hoc explanations."""

    def record_adhoc(self, *, model_key: str, actor: str, method: str, input_commitment: str,
                     explanation_sha256: str) -> tuple[str, int]:
        """Log an ad hoc explanation by the hashes of its input and result."""
        row: dict[str, Any] = {
               "id": str(uuid.uuid4()), "model_key": check_text("model_key", model_key, 260),
               "actor": check_text("actor", actor), "method": check_text("method", method, 64),
               "input_commitment": input_commitment,
               "explanation_sha256": explanation_sha256, "created_at": utcnow()}
        with self.writer.begin() as conn:
            return row["id"], self._record(conn, t.adhoc_explanations, row,
                                           "adhoc_explanation")

    def record_access(self, *, record_type: str, record_id: str, action: str, actor: str,
                      role: str, purpose: str) -> int:
        """Log that someone read or exported a record."""
        return self.record_accesses([{"record_type": record_type, "record_id": record_id,
                                      "action": action, "actor": actor, "role": role,
                                      "purpose": purpose}])[0]

    def record_accesses(self, events: Sequence[Mapping[str, Any]]) -> list[int]:
        """Many access events in one transaction (one fsync); returns their leaves."""
        rows = []
        for ev in events:
            action = ev.get("action")
            if action not in ("read", "export"):
                raise InvalidInputError("action", "must be 'read' or 'export'", action)
            rows.append({"id": str(uuid.uuid4()),
                         "record_type": check_text("record_type", ev.get("record_type"), 40),
                         "record_id": check_text("record_id", ev.get("record_id"), 80),
                         "action": action, "actor": check_text("actor", ev.get("actor")),
                         "role": check_text("role", ev.get("role"), 64),
                         "purpose": check_text("purpose", ev.get("purpose"), 200), "at": utcnow()})
        if not rows:
            return []
        with self.writer.begin() as conn:
            conn.execute(insert(t.access_events), rows)
            return self.log.append(conn, [
                (f"access_events:{r['id']}", ENTRY_BUILDERS["record_accessed"](r))
                for r in rows])

    def accesses_of(self, record_id: str, limit: int = 200) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.access_events).where(
                t.access_events.c.record_id == record_id)
                .order_by(t.access_events.c.at.desc()).limit(limit)).mappings().all()
        return [dict(r) for r in rows]

