"""Token buckets kept in the database, so that every API process draws on the same ones
(N processes with buckets of their own would allow N times the limit).

One statement takes a token: an upsert that refills the bucket for the time since its last
use and takes one only when one is there (``INSERT ... ON CONFLICT DO UPDATE ... WHERE``),
so two processes taking at once serialise on the row and never both take the last token.
On PostgreSQL the take commits without waiting for the disk (``synchronous_commit=off``):
a crash may forget the last few takes, which only gives a subject a few reads back.
"""

from __future__ import annotations

import hashlib
import math
import time

from sqlalchemy import delete, func, select, text
from sqlalchemy.dialects import postgresql, sqlite

from xai_sandbox.store import tables as t
from xai_sandbox.store.store import Store

__all__ = ["SharedBuckets"]


class SharedBuckets:
    """``per_minute`` takes per key, refilled continuously, bursts up to the same; the
    buckets are rows of ``rate_buckets`` named by a SHA-256 of ``scope`` and the key."""

    def __init__(self, store: Store, per_minute: int, scope: str) -> None:
        self.store = store
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.scope = scope
        self._takes = 0

    def take(self, key: str) -> float:
        """0 if allowed (and counted), else the seconds to wait."""
        now = time.time()  # the API hosts' clocks must agree (NTP); skew only shifts refill
        name = hashlib.sha256(f"{self.scope}\0{key}".encode()).hexdigest()
        b = t.rate_buckets
        with self.store.writer.begin() as conn:
            postgres = conn.dialect.name == "postgresql"
            if postgres:  # a bucket is no record: its commit need not wait for the disk
                conn.execute(text("SET LOCAL synchronous_commit = off"))
            least = func.least if postgres else func.min
            refilled = least(self.capacity, b.c.tokens + (now - b.c.updated) * self.rate)
            insert = (postgresql.insert if postgres else sqlite.insert)(b).values(
                key_sha256=name, tokens=self.capacity - 1.0, updated=now)
            taken = conn.execute(insert.on_conflict_do_update(
                index_elements=[b.c.key_sha256],
                set_={"tokens": refilled - 1.0, "updated": now},
                where=refilled >= 1.0).returning(b.c.tokens)).first()
            if taken is None:
                left = float(conn.execute(select(refilled).where(
                    b.c.key_sha256 == name)).scalar_one())
            self._takes += 1
            if self._takes % 1000 == 0:  # forget buckets that are full again
                conn.execute(delete(b).where(b.c.updated < now - 60.0))
        if taken is not None:
            return 0.0
        return max(1.0, math.ceil((1.0 - left) / self.rate))
