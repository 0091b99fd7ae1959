"""A feature schema drafted from data, for a person to review.

:func:`draft_schema` reads a data frame and proposes a schema: each column's kind, its
categories or observed range, and protected characteristics suggested by the column's name
and, as comments, the features associated with them. What the data cannot say (units,
monotone directions, reason codes, whether a person can change a feature) is left for a
person: every feature is drafted immutable, and :meth:`SchemaDraft.to_yaml` writes the
draft as YAML whose comments say what was inferred and what is still to decide.

The rules, in order, for a column (the target excluded):

1. datetime, timedelta or period columns are excluded (dates are no kind of the schema:
   derive a number, such as months since, and add it);
2. boolean columns are categorical with the codes ``true`` and ``false``;
3. numeric columns (integers, floats) are numeric, bounded by the data's minimum and
   maximum; a column of few whole numbers is noted as possibly codes, but stays numeric;
4. text, pandas categorical and object columns are categorical, codes sorted by frequency
   (an object column holding only numbers is numeric, one holding only booleans is
   boolean); a column of more than ``max_categories`` distinct values, or of ISO dates, is
   excluded with a note;
5. a column with no value at all is excluded.

A value's category code is its text; ``true``/``false`` for a boolean; a number's decimal
form, a whole float without ``.0`` (a CSV column with missing values reads as floats). An
empty string is a missing value. The schema cannot hold a missing value: rows with one
must be imputed before they are scored, and the draft says so where it counts them.

Column names that are not ASCII identifiers become identifiers (accents dropped, other
characters ``_``, a leading digit prefixed ``col_``, a clash numbered): the schema has no
key for a data column's own name, so the draft records it in a comment and in
:attr:`SchemaDraft.source_columns`, and :func:`~xai_sandbox.semantics.schema_check.check_schema`
takes the mapping.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from xai_sandbox.datasets.rows import value_code
from xai_sandbox.errors import SchemaError, number_in
from xai_sandbox.models.schema import FeatureSchema
from xai_sandbox.semantics.schema_draft import FeatureNote, ProxyNote, SchemaDraft

__all__ = ["DEFAULT_PROTECTED_PATTERNS", "FeatureNote", "ProxyNote", "SchemaDraft",
           "draft_schema", "identifier", "normalized_words", "value_code"]

DEFAULT_PROTECTED_PATTERNS: tuple[str, ...] = (
    r"age[sd]?", r"birth\w*", r"dob", r"sex(es)?", r"gender\w*", r"sexual_orientation",
    r"race", r"races", r"racial\w*", r"ethnic\w*", r"relig\w*", r"creed", r"caste",
    r"marital\w*", r"marriage", r"married", r"personal_status", r"civil_status",
    r"nationalit\w*", r"national_origin", r"country_of_(birth|origin)", r"foreign\w*",
    r"citizen\w*", r"immigra\w*", r"disab\w*", r"handicap\w*", r"pregnan\w*", r"maternity",
    r"skin_colou?r", r"skin_tone", r"complexion", r"language\w*", r"mother_tongue",
    r"genetic\w*", r"veteran\w*",
)
"""Regular expressions for the names of protected characteristics, each matched (case
aside) against whole words of a column's name: words are split at anything but letters
and digits and at camelCase humps, so ``age`` matches ``age`` and ``ApplicantAge`` but not
``mortgage`` or ``average``. Colour alone is not among them: it names a product's colour
(the wine data's ``color_intensity``) more often than a person's skin."""

_ASSOCIATION: dict[str, Any] = {"min_association": 0.2, "alpha": 0.01, "n_permutations": 499,
                                "bins": 5}
_MIN_ROWS = 50   # semantics.fairness measures association on 50 rows or more
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?"
                       r"(Z|[+-]\d{2}:?\d{2})?")
_TOP = 5


def normalized_words(name: str) -> str:
    """A column name as lower-case ASCII words joined by ``_`` (camelCase split)."""
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(name))
    text = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", text)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return "_".join(w for w in re.split(r"[^a-z0-9]+", text.lower()) if w)


def identifier(column: Any) -> str | None:
    """The feature name drafted for a data column: the name itself when it is an ASCII
    identifier; else accents dropped, runs of other characters ``_``, a leading digit
    prefixed ``col_``; ``None`` when nothing is left."""
    text = str(column)
    if text.isascii() and text.isidentifier():
        return text
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_")
    if not text:
        return None
    return f"col_{text}" if text[0].isdigit() else text


def _pd() -> Any:
    import pandas as pd  # type: ignore[import-untyped]

    return pd


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_)


@dataclass
class _Column:
    note: FeatureNote
    spec: dict[str, Any] | None       # the feature's schema entry (None: excluded)
    values: list[Any]                 # per row: the encoded value, None when missing


def _counts(codes: Sequence[str | None]) -> list[tuple[str, int]]:
    counted = Counter(c for c in codes if c is not None)
    return sorted(counted.items(), key=lambda kv: (-kv[1], kv[0]))


def _inspect(column: str, series: Any, max_categories: int) -> _Column:
    pd = _pd()
    dtype = series.dtype
    rows = len(series)
    base: dict[str, Any] = {"column": column, "name": None, "dtype": str(dtype), "rows": rows}
    if (pd.api.types.is_datetime64_any_dtype(dtype) or pd.api.types.is_timedelta64_dtype(dtype)
            or isinstance(dtype, pd.PeriodDtype)):
        n_missing = int(series.isna().sum())
        return _excluded(base, n_missing, series.nunique(dropna=True),
                         "a date or time is not a feature kind of the schema: derive a "
                         "number from it (months since, say) and add that")
    raw = series.tolist()
    present = [v for v in raw if value_code(v) is not None]
    if not present:
        return _excluded(base, rows, 0, "no value in the data: its kind cannot be inferred")
    numeric = (not pd.api.types.is_bool_dtype(dtype) and pd.api.types.is_numeric_dtype(dtype)
               and not pd.api.types.is_complex_dtype(dtype))
    if pd.api.types.is_object_dtype(dtype) and all(_is_number(v) for v in present):
        numeric = True
    if numeric:
        return _numeric(base, raw, integer=pd.api.types.is_integer_dtype(dtype))
    if pd.api.types.is_complex_dtype(dtype):
        return _excluded(base, rows - len(present), len(set(present)),
                         "complex numbers are not a feature kind of the schema")
    codes = [value_code(v) for v in raw]
    counts = _counts(codes)
    missing = rows - len(present)
    if all(isinstance(v, str) and _ISO_DATE.fullmatch(v) for v in present):
        return _excluded(base, missing, len(counts), "its values are ISO dates, not a "
                         "feature kind of the schema: derive a number from them and add that")
    if len(counts) > max_categories:
        return _excluded(base, missing, len(counts),
                         f"{len(counts)} distinct values, over max_categories="
                         f"{max_categories}: an identifier or free text? (raise "
                         "max_categories to draft it as categorical)", top=counts[:_TOP])
    remarks = []
    if len(counts) == 1:
        remarks.append("constant in the data: it cannot move a decision; consider dropping it")
    if missing:
        remarks.append(f"{missing} missing values: the schema holds none, impute these rows "
                       "before scoring")
    note = FeatureNote(**base, kind="categorical", distinct=len(counts), missing=missing,
                       top=tuple(counts[:_TOP]), remarks=tuple(remarks))
    spec = {"kind": "categorical", "categories": [c for c, _ in counts]}
    return _Column(note, spec, codes)


def _excluded(base: dict[str, Any], missing: int, distinct: int, why: str,
              top: Sequence[tuple[str, int]] = ()) -> _Column:
    note = FeatureNote(**base, kind=None, distinct=int(distinct), missing=int(missing),
                       top=tuple(top), excluded=why)
    return _Column(note, None, [])


def _numeric(base: dict[str, Any], raw: list[Any], *, integer: bool) -> _Column:
    numbers = [None if value_code(v) is None else float(v) for v in raw]
    finite = [v for v in numbers if v is not None and math.isfinite(v)]
    missing = sum(v is None for v in numbers)
    infinite = len(raw) - missing - len(finite)
    if not finite:
        return _excluded(base, missing, len(set(numbers) - {None}),
                         "no finite value in the data: its range cannot be inferred")
    low, high = min(finite), max(finite)
    distinct = len(set(finite))
    whole = all(v.is_integer() for v in finite)
    remarks = []
    if distinct == 1:
        remarks.append("constant in the data: it cannot move a decision; consider dropping it")
    elif whole and distinct <= 10:
        remarks.append(f"only {distinct} distinct whole numbers: if they are codes rather "
                       "than amounts, make it categorical (codes as strings)")
    if whole and distinct == len(raw) >= 20:
        remarks.append("every value distinct: a row identifier? drop it from the features")
    if missing:
        remarks.append(f"{missing} missing values: the schema holds none, impute these rows "
                       "before scoring")
    if infinite:
        remarks.append(f"{infinite} infinite values: outside any bounds; fix or impute them")
    as_int = integer and whole
    bounds = [int(low), int(high)] if as_int else [low, high]
    note = FeatureNote(**base, kind="numeric", distinct=distinct, missing=missing,
                       infinite=infinite, minimum=low, maximum=high, remarks=tuple(remarks))
    values = [v if v is not None and math.isfinite(v) else None for v in numbers]
    return _Column(note, {"kind": "numeric", "bounds": bounds}, values)


def _compile(patterns: Sequence[str]) -> list[tuple[str, re.Pattern[str]]]:
    if isinstance(patterns, str) or not isinstance(patterns, Sequence):
        raise SchemaError("protected_names", "must be a list of regular expressions", patterns)
    out = []
    for pattern in patterns:
        try:
            out.append((pattern, re.compile(rf"(?:^|_)(?:{pattern})(?:_|$)", re.IGNORECASE)))
        except (re.error, TypeError) as exc:
            raise SchemaError("protected_names", f"must be regular expressions ({exc})",
                              pattern) from None
    return out


def _unique_names(columns: Sequence[str]) -> list[str]:
    """Feature names for the columns: an ASCII identifier keeps its name, the others get
    :func:`identifier` (``column_<n>`` when it gives none), numbered where taken."""
    taken = {c for c in columns if c.isascii() and c.isidentifier()}
    names: list[str] = []
    for i, column in enumerate(columns):
        if column.isascii() and column.isidentifier():
            names.append(column)
            continue
        base = identifier(column) or f"column_{i + 1}"
        name, k = base, 2
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        taken.add(name)
        names.append(name)
    return names


def _target_counts(series: Any) -> tuple[tuple[str, int], ...]:
    return tuple(_counts([value_code(v) for v in series.tolist()]))


def _proxies(schema: dict[str, Any], columns: list[_Column], random_state: Any
             ) -> tuple[dict[str, list[ProxyNote]], str]:
    """Likely proxies per feature for the name-suggested protected ones, and the header's
    sentence on how (or why not) they were measured."""
    from xai_sandbox.semantics.fairness import PROXY_MEASURE, likely_proxies

    drafted = [c for c in columns if c.spec is not None]
    protected = [c.note.name for c in drafted if c.note.protected_by]
    if not protected:
        return {}, "not measured: no feature was suggested as protected"
    if len(protected) == len(drafted):
        return {}, "not measured: every feature is suggested as protected"
    complete = [i for i in range(len(drafted[0].values))
                if all(c.values[i] is not None for c in drafted)]
    if len(complete) < _MIN_ROWS:
        return {}, (f"not measured: {len(complete)} rows without a missing value, the test "
                    f"needs {_MIN_ROWS}")
    rows = [{str(c.note.name): c.values[i] for c in drafted} for i in complete]
    found = likely_proxies(FeatureSchema.from_dict(schema), rows, random_state=random_state,
                           **_ASSOCIATION)
    out: dict[str, list[ProxyNote]] = {}
    for name, group in found.items():
        for finding in group:
            out.setdefault(finding.feature, []).append(
                ProxyNote(name, float(finding.value), float(finding.p_value)))
    how = (f"{PROXY_MEASURE} (Bergsma 2013) of every feature with each suggested protected "
           f"one, numbers in {_ASSOCIATION['bins']} quantile bins, p-values from "
           f"{_ASSOCIATION['n_permutations']} permutations (semantics.fairness."
           f"likely_proxies, random_state={random_state!r}); a possible proxy has V >= "
           f"{_ASSOCIATION['min_association']} and p < {_ASSOCIATION['alpha']}; measured on "
           f"the {len(complete)} rows without a missing value")
    return out, how


def draft_schema(frame: Any, *, target: str | None = None, version: str = "1",
                 protected_names: Sequence[str] = DEFAULT_PROTECTED_PATTERNS,
                 max_categories: int = 50,
                 random_state: int | np.random.Generator | None = 0) -> SchemaDraft:
    """Draft a feature schema from the columns of ``frame`` (see the module for the rules).

    Parameters
    ----------
    frame:
        A :class:`pandas.DataFrame` of at least one row, with unique column names.
    target:
        The column the model predicts: excluded from the features, its classes counted.
    version:
        The schema's ``version``.
    protected_names:
        Regular expressions for names of protected characteristics (see
        :data:`DEFAULT_PROTECTED_PATTERNS`): a feature whose name matches one is drafted
        ``protected: true``; the features associated with it are noted as possible proxies.
    max_categories:
        A text column with more distinct values is excluded, with a note.
    random_state:
        Seeds the permutation test of the association.

    Raises
    ------
    SchemaError
        For an argument that breaks its rule, or a frame with no column a feature can be
        drafted from (the message names every column and why).
    """
    pd = _pd()
    if not isinstance(frame, pd.DataFrame):
        raise SchemaError("frame", "must be a pandas DataFrame", type(frame).__name__)
    if not isinstance(version, str) or not version:
        raise SchemaError("version", "must be a non-empty string", version)
    number_in(max_categories, 1, 100_000, "max_categories", integer=True)
    patterns = _compile(protected_names)
    labels = [str(c) for c in frame.columns]
    dupes = sorted({c for c in labels if labels.count(c) > 1})
    if dupes:
        raise SchemaError("frame", "column names must be unique", dupes)
    if len(frame) == 0:
        raise SchemaError("frame", "must hold at least one row", len(frame))
    if target is not None and target not in labels:
        raise SchemaError("target", f"must be a column of the data {labels}", target)
    kept = [i for i, c in enumerate(labels) if c != target]
    names = _unique_names([labels[i] for i in kept])
    columns: list[_Column] = []
    for i, name in zip(kept, names, strict=True):
        col = _inspect(labels[i], frame.iloc[:, i], int(max_categories))
        if col.spec is not None:
            words = normalized_words(labels[i])
            matched = next((p for p, rx in patterns if rx.search(words)), None)
            col.note = replace(col.note, name=name, protected_by=matched)
            col.spec = {"name": name, "display": labels[i], **col.spec, "mutable": False,
                        "protected": matched is not None}
        columns.append(col)
    drafted = [c for c in columns if c.spec is not None]
    if not drafted:
        why = "; ".join(f"{json.dumps(c.note.column, ensure_ascii=False)}: {c.note.excluded}"
                        for c in columns) or "only the target"
        raise SchemaError("frame", f"has no column a feature can be drafted from ({why})",
                          [c.note.column for c in columns])
    schema = {"version": version, "features": [c.spec for c in drafted]}
    proxies, how = _proxies(schema, columns, random_state)
    for c in drafted:
        c.note = replace(c.note, proxies=tuple(proxies.get(str(c.note.name), ())))
    FeatureSchema.from_dict(schema)   # the draft is a valid schema, or this is a bug
    return SchemaDraft(schema=schema, notes=tuple(c.note for c in columns), rows=len(frame),
                       target=target,
                       target_counts=_target_counts(frame[target]) if target else (),
                       association=how)
