"""The durable store: decisions, payloads, reports, reviews, access events and alerts,
each written together with its audit-log entry in one transaction.

One class per section of records, put together here: :mod:`~xai_sandbox.store.core`
(engine, log, keys, models), :mod:`~xai_sandbox.store.reviews` (reviews, alerts),
:mod:`~xai_sandbox.store.reports`, :mod:`~xai_sandbox.store.decisions`,
:mod:`~xai_sandbox.store.access` and :mod:`~xai_sandbox.store.retention` (erasure,
holds, purges). How the database is opened is in :mod:`~xai_sandbox.store.engine`.
"""

from __future__ import annotations

from xai_sandbox.store.access import AccessRecords
from xai_sandbox.store.decisions import DecisionRecords, PreparedDecision, StoredDecision
from xai_sandbox.store.engine import make_engine, migrate, writer
from xai_sandbox.store.facets import (
    RELIABILITY_LEVELS,
    REVIEW_KINDS,
    REVIEW_OUTCOMES,
    REVIEW_STATES,
    DecisionFilter,
    report_facets,
)
from xai_sandbox.store.retention import RetentionRecords

# The store's names, importable from this module as before the sections were split.
__all__ = ["RELIABILITY_LEVELS", "REVIEW_KINDS", "REVIEW_OUTCOMES", "REVIEW_STATES",
           "DecisionFilter", "PreparedDecision", "Store", "StoredDecision", "make_engine",
           "migrate", "report_facets", "writer"]


class Store(DecisionRecords, AccessRecords, RetentionRecords):
    """Records and their audit log in one database.

    Parameters
    ----------
    settings:
        Where the database and keys live, the log's origin and the retention periods.
    """
