"""Anchor-risk streaks kept in the database, for deployments where several processes
explain decisions (job workers, API processes): each update reads and writes the
streak's row in one write transaction, so the decisions of every process count in the
order their updates commit, and exactly one update sees a streak reach ``n``."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from xai_sandbox.errors import InvalidInputError
from xai_sandbox.store import tables as t
from xai_sandbox.store.store import Store

__all__ = ["SharedStreaks"]


class SharedStreaks:
    """:class:`~xai_sandbox.monitor.alerts.AnchorStreaks` with its state in
    ``anchor_streaks``: the same ``update``, shared by every process."""

    def __init__(self, store: Store, n: int = 5) -> None:
        if n < 1:
            raise InvalidInputError("n", "must be at least 1", n)
        self.store = store
        self.n = n

    def update(self, model_key: str, decision_id: str, matches: Sequence[Mapping[str, Any]],
               *, replay: bool = False) -> list[tuple[Mapping[str, Any], list[str]]]:
        """Record one decision's anchor matches; returns (match, decision ids) of every
        anchor whose streak has just reached ``n``. ``replay`` does nothing: the streaks
        outlive a restart in the database."""
        if replay or not matches:
            return []
        s = t.anchor_streaks
        due = []
        with self.store.writer.begin() as conn:
            postgres = conn.dialect.name == "postgresql"
            if postgres:  # derived state: its commit need not wait for the disk
                conn.execute(text("SET LOCAL synchronous_commit = off"))
            insert = postgresql.insert if postgres else sqlite.insert
            for m in sorted(matches, key=lambda m: str(m["anchor"])):  # one lock order
                anchor = str(m["anchor"])[:64]
                where = (s.c.model_key == model_key) & (s.c.anchor == anchor)
                conn.execute(insert(s).values(model_key=model_key, anchor=anchor,
                                              decisions_json="[]").on_conflict_do_nothing())
                query = select(s.c.decisions_json).where(where)
                found = conn.execute(query.with_for_update() if postgres else query).scalar()
                streak: list[str] = json.loads(found) if found else []
                if m["hit"]:
                    streak.append(decision_id)
                    if len(streak) == self.n:
                        due.append((m, list(streak)))
                        streak = []
                else:
                    streak = []
                conn.execute(update(s).where(where).values(decisions_json=json.dumps(streak)))
        return due
