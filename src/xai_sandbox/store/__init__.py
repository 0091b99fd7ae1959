"""Durable records (SQLAlchemy 2, Alembic): SQLite by default, PostgreSQL by URL.

``Store`` is imported lazily: the audit log imports this package's tables, and the store
imports the audit log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from xai_sandbox.store.store import (
        REVIEW_OUTCOMES,
        Store,
        StoredDecision,
        make_engine,
        migrate,
        writer,
    )

__all__ = ["REVIEW_OUTCOMES", "Store", "StoredDecision", "make_engine", "migrate", "writer"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from xai_sandbox.store import store

        return getattr(store, name)
    raise AttributeError(name)
