"""A batch's rows as recorded decisions (``explain_batch(record=store)``).

Each worker prepares its shard's decisions as :func:`~xai_sandbox.workflows.decide.decide`
would (scored, explained by the policy into a full report, or left a job), writing
nothing; the driver writes them through the store's batched path, many decisions and
their audit-log entries per transaction (the log's group commit).

Exactly once: a row's decision id is derived from the batch's plan, its shard and its place
in the shard, so a shard prepared twice (a worker killed, a batch resumed) gives the same
ids, and the driver writes only the ids the store does not hold yet.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from xai_sandbox.reports.report import REPORT_SCHEMA
from xai_sandbox.settings import Settings
from xai_sandbox.store.store import Store
from xai_sandbox.workflows.decide import Prepared
from xai_sandbox.workflows.served import ServedModel

__all__ = ["decision_ids", "prepare_shard", "record_shard"]

WRITE_ROWS = 200     # decisions per transaction


def decision_ids(plan: Mapping[str, Any], index: int, rows: int) -> list[str]:
    """The decision ids of shard ``index``'s ``rows`` rows."""
    digest = hashlib.sha256(json.dumps(dict(plan), sort_keys=True, default=str).encode()
                            ).hexdigest()
    return [str(uuid.uuid5(uuid.NAMESPACE_URL, f"xai-sandbox-batch:{digest}:{index}:{i}"))
            for i in range(rows)]


def prepare_shard(served: ServedModel, frame: Any, index: int, first_row: int,
                  plan: Mapping[str, Any], settings: Settings) -> list[Prepared]:
    """A shard's decisions, made and explained in a worker, not yet written (the store is
    opened for its secrets: subject references, input commitments)."""
    from xai_sandbox.datasets.rows import schema_rows
    from xai_sandbox.workflows.context import Context
    from xai_sandbox.workflows.decide import prepare

    rows = schema_rows(served.schema, frame)
    keys = ([str(k) for k in frame[plan["key_column"]]] if plan["key_column"]
            else [str(first_row + i) for i in range(len(rows))])
    subjects = ([str(s) for s in frame[plan["subject_column"]]] if plan["subject_column"]
                else [f"row-{k}" for k in keys])
    store = Store(settings)
    try:
        ctx = Context(store)
        ctx.serve(served)
        return [prepare(ctx, served, subject_id=subject, features=features, case_ref=key,
                        decision_id=decision_id)
                for features, key, subject, decision_id in zip(
                    rows, keys, subjects, decision_ids(plan, index, len(rows)), strict=True)]
    finally:
        store.close()


def record_shard(store: Store, made: Sequence[Prepared]) -> int:
    """Write those of ``made`` the store does not hold yet; returns how many it wrote."""
    held = store.recorded([m.prepared.row["id"] for m in made])
    todo = [m for m in made if m.prepared.row["id"] not in held]
    for start in range(0, len(todo), WRITE_ROWS):
        part = todo[start : start + WRITE_ROWS]
        store.record_prepared([m.prepared for m in part], reports=[m.report for m in part],
                              jobs=[m.job for m in part], report_schema=REPORT_SCHEMA)
    return len(todo)
