"""Check a feature schema against the data and the model it is meant for.

:func:`check_schema` answers "will this schema work?" before a model is registered with
it: every problem names the feature (or the model) and says what is wrong and how often,
so that a person fixes the schema, the data or the model before any decision is made.

With data (a frame of raw rows, as a CSV or Parquet file holds them):

- a feature with no column (columns are matched by name, or by the identifier the draft
  made of a column's name: :func:`~xai_sandbox.semantics.drafting.identifier`);
- missing values (the schema holds none: such rows must be imputed before scoring);
- numeric features: values that are not numbers, or outside the ``bounds``;
- categorical features: codes that are not among the ``categories``.

Columns of the data that the schema does not name are listed as notes (the target is one).

With a model (its adapter, loaded with this schema):

- the number of columns it takes against the schema's encoding (one per number, one per
  category);
- its outputs on the data's valid rows (or on a row of typical values without data):
  finite, one per class, and probabilities in [0, 1] summing to 1 where it outputs
  probabilities.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xai_sandbox.datasets.rows import schema_rows, value_code
from xai_sandbox.errors import InvalidInputError
from xai_sandbox.models.adapters import ModelAdapter
from xai_sandbox.models.schema import FeatureSchema
from xai_sandbox.semantics.drafting import identifier

__all__ = ["Problem", "SchemaCheck", "check_schema"]

_EXAMPLES = 3          # offending values quoted per problem
_MODEL_ROWS = 256      # valid rows the model is run on


@dataclass(frozen=True)
class Problem:
    """One thing that keeps the schema from working.

    Attributes
    ----------
    feature:
        The feature's name, ``"model"`` for the model as a whole, or ``"data"``.
    rule:
        What must hold, as a sentence fragment ("values must be within the bounds").
    detail:
        What was found: counts, the first offending values and their rows.
    """

    feature: str
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.feature}: {self.rule} ({self.detail})"

    def to_dict(self) -> dict[str, str]:
        return {"feature": self.feature, "rule": self.rule, "detail": self.detail}


@dataclass(frozen=True)
class SchemaCheck:
    """The outcome of :func:`check_schema`: ``ok`` when there are no problems."""

    problems: tuple[Problem, ...]
    notes: tuple[str, ...] = ()
    rows: int | None = None
    columns: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "rows": self.rows, "columns": dict(self.columns),
                "problems": [p.to_dict() for p in self.problems], "notes": list(self.notes)}


def check_schema(schema: FeatureSchema, *, data: Any = None, model: ModelAdapter | None = None,
                 source_columns: Mapping[str, str] | None = None,
                 class_names: tuple[str, ...] | None = None) -> SchemaCheck:
    """Check ``schema`` against ``data`` and ``model`` (see the module for what is checked).

    Parameters
    ----------
    schema:
        The feature schema.
    data:
        A :class:`pandas.DataFrame` of raw rows (optional).
    model:
        The model's adapter, loaded with this schema (optional).
    source_columns:
        Feature name -> data column, where they differ (a draft's
        :attr:`~xai_sandbox.semantics.schema_draft.SchemaDraft.source_columns`); other
        features are matched by name, then by the identifier of a column's name.
    class_names:
        The classes the model's outputs are, in order; their number is checked.

    Raises
    ------
    InvalidInputError
        Naming the parameter that is not of its type.
    """
    import pandas as pd  # type: ignore[import-untyped]

    if not isinstance(schema, FeatureSchema):
        raise InvalidInputError("schema", "must be a FeatureSchema", type(schema).__name__)
    if data is not None and not isinstance(data, pd.DataFrame):
        raise InvalidInputError("data", "must be a pandas DataFrame", type(data).__name__)
    if model is not None and not isinstance(model, ModelAdapter):
        raise InvalidInputError("model", "must be a ModelAdapter", type(model).__name__)
    given = dict(source_columns or {})
    unknown = sorted(set(given) - set(schema.names))
    if unknown:
        raise InvalidInputError("source_columns", "must map features of the schema", unknown)
    problems: list[Problem] = []
    notes: list[str] = []
    columns: dict[str, str] = {}
    valid: np.ndarray | None = None
    rows: list[dict[str, Any]] = []
    if data is not None:
        columns = _match_columns(schema, data, given, problems)
        named = set(columns.values())
        other = [str(c) for c in data.columns if str(c) not in named]
        if other:
            notes.append(f"columns not in the schema (not given to the model): {other}")
        valid = np.ones(len(data), dtype=bool)
        for spec in schema.features:
            if spec.name in columns:
                ok = _check_column(spec, data[columns[spec.name]], problems)
                valid &= ok
        if len(columns) == len(schema.names):
            picked = np.flatnonzero(valid)[:_MODEL_ROWS]
            rows = schema_rows(schema, data.iloc[picked], columns)
        if len(data) and not valid.any():
            problems.append(Problem("data", "at least one row must be valid for every feature",
                                    f"none of the {len(data)} rows is"))
    if model is not None:
        _check_model(schema, model, rows, data is None, class_names, problems)
    return SchemaCheck(problems=tuple(problems), notes=tuple(notes),
                       rows=None if data is None else len(data), columns=columns)


def _match_columns(schema: FeatureSchema, data: Any, given: Mapping[str, str],
                   problems: list[Problem]) -> dict[str, str]:
    labels = [str(c) for c in data.columns]
    by_identifier: dict[str, str] = {}
    for label in labels:
        ident = identifier(label)
        if ident is not None:
            by_identifier.setdefault(ident, label)
    out: dict[str, str] = {}
    for name in schema.names:
        column = given.get(name)
        if column is None:
            column = name if name in labels else by_identifier.get(name)
        if column is None or column not in labels:
            problems.append(Problem(name, "must be a column of the data",
                                    f"no column {column or name!r} among {labels}"))
            continue
        out[name] = column
    return out


def _where(mask: np.ndarray, series: Any) -> str:
    idx = np.flatnonzero(mask)
    shown = ", ".join(f"row {i}: {_plain(series.iloc[i])!r}" for i in idx[:_EXAMPLES])
    more = f" and {len(idx) - _EXAMPLES} more" if len(idx) > _EXAMPLES else ""
    return f"{len(idx)} of {len(mask)} rows; {shown}{more}"


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value it holds (``100.0``, not ``np.float64(100.0)``)."""
    return value.item() if isinstance(value, np.generic) else value


def _check_column(spec: Any, series: Any, problems: list[Problem]) -> np.ndarray:
    """The rows whose value of this feature the schema accepts; problems appended."""
    import pandas as pd

    missing = np.asarray(series.isna()) | np.asarray(
        series.map(lambda v: isinstance(v, str) and not v.strip()))
    if missing.any():
        problems.append(Problem(spec.name, "must have no missing values (impute them before "
                                "scoring)", f"{int(missing.sum())} of {len(series)} rows "
                                "missing, first at row " + str(int(np.flatnonzero(missing)[0]))))
    ok: np.ndarray = ~missing
    if spec.kind == "numeric":
        numbers = pd.to_numeric(series.where(~pd.Series(missing, index=series.index)),
                                errors="coerce")
        is_bool = np.asarray(series.map(lambda v: isinstance(v, bool | np.bool_)))
        not_number = ~missing & (np.asarray(numbers.isna()) | is_bool)
        values = np.asarray(numbers, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            infinite = ~missing & ~not_number & ~np.isfinite(values)
        not_number |= infinite
        if not_number.any():
            problems.append(Problem(spec.name, "values must be finite numbers",
                                    _where(not_number, series)))
        ok &= ~not_number
        if spec.bounds is not None:
            low, high = spec.bounds
            with np.errstate(invalid="ignore"):
                outside = ok & ((values < low) | (values > high))
            if outside.any():
                problems.append(Problem(
                    spec.name, f"values must be within the bounds [{_num(low)}, {_num(high)}]",
                    f"observed [{_num(np.nanmin(values[ok]))}, {_num(np.nanmax(values[ok]))}]; "
                    + _where(outside, series)))
                ok &= ~outside
        return ok
    codes = set(spec.category_codes())
    unknown = ok & np.asarray(series.map(lambda v: value_code(v) not in codes))
    if unknown.any():
        found = sorted({str(value_code(v)) for v, u in zip(series, unknown, strict=True) if u})
        problems.append(Problem(spec.name, f"values must be among the categories "
                                f"{list(spec.category_codes())}", f"unknown codes {found[:10]}; "
                                + _where(unknown, series)))
        ok &= ~unknown
    return ok


def _num(value: float) -> str:
    return f"{value:g}"


def _typical_row(schema: FeatureSchema) -> dict[str, Any]:
    """A row of each feature's middle value (its bounds' midpoint, else 0) and first code."""
    row: dict[str, Any] = {}
    for spec in schema.features:
        if spec.kind == "categorical":
            row[spec.name] = spec.category_codes()[0]
        elif spec.bounds is not None:
            row[spec.name] = (spec.bounds[0] + spec.bounds[1]) / 2
        else:
            row[spec.name] = 0.0
    return row


def _check_model(schema: FeatureSchema, model: ModelAdapter, rows: list[dict[str, Any]],
                 no_data: bool, class_names: tuple[str, ...] | None,
                 problems: list[Problem]) -> None:
    width = len(schema.columns)
    takes = model.sample_shape[0] if model.sample_shape else None
    if model.input_kind != "tabular" or (model.sample_shape is not None
                                         and len(model.sample_shape) != 1):
        problems.append(Problem("model", "must take one row of columns (a tabular model)",
                                f"takes {model.input_kind} inputs of shape "
                                f"{model.sample_shape}"))
        return
    if takes is not None and takes != width:
        per = ", ".join(f"{s.name} {len(c)}" for s, c in
                        zip(schema.features, schema.groups, strict=True))
        problems.append(Problem("model", f"must take the schema's {width} encoded columns "
                                "(one per numeric feature, one per category, in schema order)",
                                f"the model takes {takes}; the schema's columns: {per}"))
        return
    if not rows:
        if not no_data:
            return   # the data's problems are named already; nothing valid to run
        rows = [_typical_row(schema)]
    X = schema.encode(rows)
    try:
        out = np.asarray(model.predict(X), dtype=np.float64)
    except Exception as exc:   # the model's own failure is what the person needs to see
        problems.append(Problem("model", "must score the schema's encoded rows",
                                f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"))
        return
    if out.ndim != 2 or out.shape[0] != len(rows):
        problems.append(Problem("model", "must give one output row per input row",
                                f"shape {out.shape} for {len(rows)} rows"))
        return
    if not np.isfinite(out).all():
        bad = int((~np.isfinite(out)).any(axis=1).sum())
        problems.append(Problem("model", "outputs must be finite",
                                f"{bad} of {len(rows)} rows give NaN or infinity"))
    if class_names is not None and out.shape[1] not in (1, len(class_names)):
        problems.append(Problem("model", f"must give one output per class {list(class_names)}",
                                f"gives {out.shape[1]}"))
    if model.output_space == "probability" and np.isfinite(out).all():
        sums = out.sum(axis=1) if out.shape[1] > 1 else np.ones(len(out))
        if (out < -1e-6).any() or (out > 1 + 1e-6).any() or not np.allclose(sums, 1, atol=1e-4):
            problems.append(Problem("model", "probabilities must lie in [0, 1] and sum to 1",
                                    f"range [{out.min():g}, {out.max():g}], sums "
                                    f"[{sums.min():g}, {sums.max():g}]"))
