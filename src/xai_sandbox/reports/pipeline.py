"""Moved to :mod:`xai_sandbox.workflows` (transitional; removed when the service moves)."""

from xai_sandbox.workflows import (
    REPORT_SCHEMA,
    Decider,
    DecisionOutcome,
    ServedModel,
    add_working_days,
)

__all__ = ["REPORT_SCHEMA", "Decider", "DecisionOutcome", "ServedModel", "add_working_days"]
