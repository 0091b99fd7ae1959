"""Durable records (SQLAlchemy 2, Alembic): SQLite by default, PostgreSQL by URL."""

from xai_sandbox.store.store import REVIEW_OUTCOMES, Store, StoredDecision, make_engine, migrate

__all__ = ["REVIEW_OUTCOMES", "Store", "StoredDecision", "make_engine", "migrate"]
