"""Durable records (SQLAlchemy 2, Alembic): SQLite by default, PostgreSQL by URL."""

from __future__ import annotations

from xai_sandbox.store.decisions import StoredDecision
from xai_sandbox.store.engine import make_engine, migrate, writer
from xai_sandbox.store.facets import REVIEW_OUTCOMES
from xai_sandbox.store.store import Store

__all__ = ["REVIEW_OUTCOMES", "Store", "StoredDecision", "make_engine", "migrate", "writer"]
