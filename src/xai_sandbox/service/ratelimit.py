"""Token buckets on explanation reads, per subject and per key.

A subject who could read explanations without limit could probe the model with many
near-identical applications and reconstruct it; the limits keep reads to what a person
needs. On PostgreSQL (several API processes) the buckets are rows of the database that
every process shares (:class:`~xai_sandbox.store.buckets.SharedBuckets`); on SQLite (one
process per database file) they live in the process. A refusal says when to come back
(``Retry-After``).
"""

from __future__ import annotations

import math
import threading
import time
from typing import Protocol

from xai_sandbox.settings import Settings
from xai_sandbox.store.buckets import SharedBuckets
from xai_sandbox.store.store import Store

__all__ = ["Limiter", "RateLimiter", "limiter"]


class Limiter(Protocol):
    def take(self, key: str) -> float:
        """0 if allowed (and counted), else the seconds to wait."""
        ...


def limiter(settings: Settings, store: Store, per_minute: int, scope: str) -> Limiter:
    """Buckets in the database when several processes share it (PostgreSQL, or
    ``rate_limit_store="database"``), else in this process."""
    shared = settings.rate_limit_store == "database" or (
        settings.rate_limit_store == "auto" and store.engine.dialect.name == "postgresql")
    return SharedBuckets(store, per_minute, scope) if shared else RateLimiter(per_minute)


class RateLimiter:
    """``per_minute`` requests per key, refilled continuously, bursts up to the same."""

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """0 if allowed (and counted), else the seconds to wait."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                if len(self._buckets) > 100_000:  # forget full buckets
                    self._buckets = {k: v for k, v in self._buckets.items()
                                     if v[0] < self.capacity - 1}
                return 0.0
            self._buckets[key] = (tokens, now)
            return max(1.0, math.ceil((1.0 - tokens) / self.rate))
