"""A table's rows as a feature schema reads them.

A data frame read from a user's file holds numbers, booleans and text as pandas typed
them; a schema's row holds a float per numeric feature and a code (a string) per
categorical one. :func:`value_code` is the one rule from a data value to a category code
(the rule the schema draft writes its codes by), and :func:`schema_rows` applies it to
a frame, so a CSV column of codes ``1, 2, 3`` read as integers (or as floats, where values
are missing) meets the codes ``"1", "2", "3"`` of its schema.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from xai_sandbox.errors import InvalidInputError
from xai_sandbox.models.schema import FeatureSchema

__all__ = ["schema_rows", "value_code"]


def value_code(value: Any) -> str | None:
    """The category code of a data value; ``None`` for a missing one (``None``, NaN,
    pandas' ``NA``/``NaT``, an empty string). ``true``/``false`` for a boolean; an
    integer's decimal form; a whole float without ``.0``; any other value's text."""
    if value is None or _is_na(value):
        return None
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        number = float(value)
        if math.isnan(number):
            return None
        return str(int(number)) if number.is_integer() else repr(number)
    text = str(value)
    return text or None


def _is_na(value: Any) -> bool:
    import pandas as pd  # type: ignore[import-untyped]

    return value is pd.NA or value is pd.NaT


def _number(value: Any) -> Any:
    """A numeric feature's value: a float where the data holds a number, else the value
    itself (for the schema to refuse, naming the feature)."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | float | np.integer | np.floating):
        return float(value)
    return value


def schema_rows(schema: FeatureSchema, frame: Any,
                columns: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """The rows of ``frame`` as ``schema`` reads them: each feature's value from its column
    (``columns`` maps a feature to another column name), a float for a numeric feature and
    :func:`value_code` for a categorical one; missing values stay ``None``.

    Raises
    ------
    InvalidInputError
        Naming ``frame`` when it is not a data frame or lacks a feature's column.
    """
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        raise InvalidInputError("frame", "must be a pandas DataFrame", type(frame).__name__)
    where = {name: (columns or {}).get(name, name) for name in schema.names}
    missing = [c for c in where.values() if c not in frame.columns]
    if missing:
        raise InvalidInputError("frame", "must have a column for every feature of the schema",
                                missing)
    out: list[dict[str, Any]] = [{} for _ in range(len(frame))]
    for spec in schema.features:
        values = frame[where[spec.name]].tolist()
        convert = value_code if spec.kind == "categorical" else _number
        for row, value in zip(out, values, strict=True):
            row[spec.name] = None if value is None or (
                isinstance(value, float) and math.isnan(value)) else convert(value)
    return out
