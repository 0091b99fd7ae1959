"""Tables a user brings: CSV and Parquet files read whole or streamed in batches.

:func:`read_table` reads a file into a :class:`pandas.DataFrame`; :func:`iter_table` yields
it in frames of a fixed number of rows without holding the file in memory. Both refuse a
file they cannot read faithfully with an :class:`~xai_sandbox.errors.InvalidInputError`
that names the path and, for CSV, the line.

CSV is read as UTF-8 (a byte-order mark allowed) with a header line of unique, non-empty
column names; an empty field is a missing value. :func:`read_table` gives each column the
narrowest type that holds every value of the file: ``int64`` (``float64`` when values are
missing), ``float64``, ``bool`` (``true``/``false`` in any case) or text. :func:`iter_table`
streams CSV through ``pyarrow.csv.open_csv``, which infers the types from the file's first
block, so a later value that does not fit them is an error there (``read_table`` reads it).
Parquet is read through pyarrow, with its own types; with ``max_rows`` only that many rows
are read, batch by batch.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xai_sandbox.errors import InvalidInputError, number_in

if TYPE_CHECKING:
    import pandas as pd  # type: ignore[import-untyped]

__all__ = ["TABLE_SUFFIXES", "iter_table", "read_table"]

TABLE_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
"""File suffixes the readers take, and the format each one names."""

_INTEGER = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|infinity)|nan",
                    re.IGNORECASE)
_PARQUET_BATCH = 65_536


def _format(path: Path) -> str:
    kind = TABLE_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise InvalidInputError("path", f"must end in one of {sorted(TABLE_SUFFIXES)}",
                                str(path))
    if not path.is_file():
        raise InvalidInputError("path", "must be an existing file", str(path))
    return kind


def _columns(columns: Sequence[str] | None) -> list[str] | None:
    if columns is None:
        return None
    if isinstance(columns, str) or not all(isinstance(c, str) for c in columns):
        raise InvalidInputError("columns", "must be a list of column names", columns)
    return list(columns)


def _check_header(header: Sequence[str], path: Path, where: str) -> None:
    unnamed = [i + 1 for i, name in enumerate(header) if not name.strip()]
    if unnamed:
        raise InvalidInputError("path", f"{where}: every column needs a name; column(s) "
                                f"{unnamed} have none (a file written by pandas' to_csv "
                                "with its index has one: write it with index=False)",
                                str(path))
    dupes = sorted({n for n in header if list(header).count(n) > 1})
    if dupes:
        raise InvalidInputError("path", f"{where}: column names must be unique; repeated: "
                                f"{dupes}", str(path))


def _selected(header: Sequence[str], columns: list[str] | None, path: Path) -> list[int]:
    if columns is None:
        return list(range(len(header)))
    missing = [c for c in columns if c not in header]
    if missing:
        raise InvalidInputError("columns", f"must be columns of {path} (it has "
                                f"{list(header)})", missing)
    return [list(header).index(c) for c in columns]


def _bad_utf8_line(path: Path) -> tuple[int, int]:
    """The first line (1-based) holding bytes that are not UTF-8, and the first such byte."""
    with path.open("rb") as fh:
        for number, line in enumerate(fh, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                return number, line[exc.start]
    return 0, 0   # pragma: no cover - only called after a decoding error


def _csv_records(path: Path) -> Generator[tuple[int, list[str]], None, None]:
    """(line number, fields) of every non-blank line of a CSV file, the header first."""
    try:
        fh = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise InvalidInputError("path", f"must be a readable file ({exc.strerror})",
                                str(path)) from exc
    with fh:
        reader = csv.reader(fh, strict=True)   # an unclosed quote is an error, not a field
        try:
            for record in reader:
                if record:
                    yield reader.line_num, record
        except UnicodeDecodeError:
            line, byte = _bad_utf8_line(path)
            raise InvalidInputError("path", f"line {line}: must be UTF-8 text (byte "
                                    f"0x{byte:02x} is not)", str(path)) from None
        except csv.Error as exc:   # a field over csv.field_size_limit(), an unclosed quote
            raise InvalidInputError("path", f"line {reader.line_num}: must be a CSV "
                                    f"record ({exc})", str(path)) from None


def _csv_header(path: Path) -> list[str]:
    records = _csv_records(path)
    try:
        first = next(records, None)
    finally:
        records.close()
    if first is None:
        raise InvalidInputError("path", "line 1: must hold a header of column names (the "
                                "file is empty)", str(path))
    _check_header(first[1], path, f"line {first[0]}")
    return first[1]


def _typed(raw: list[str]) -> pd.Series:
    """A CSV column as the narrowest type holding every value ("" is missing)."""
    import numpy as np
    import pandas as pd

    present = [v for v in raw if v != ""]
    complete = len(present) == len(raw)
    if present and all(_INTEGER.fullmatch(v) for v in present):
        if complete:
            try:
                return pd.Series(np.array([int(v) for v in raw], dtype=np.int64))
            except OverflowError:
                pass   # beyond int64: read as floats below
        return pd.Series([float(v) if v else np.nan for v in raw], dtype=np.float64)
    if present and all(_FLOAT.fullmatch(v) for v in present):
        return pd.Series([float(v) if v else np.nan for v in raw], dtype=np.float64)
    if present and all(v.lower() in ("true", "false") for v in present):
        flags = [v.lower() == "true" if v else None for v in raw]
        return pd.Series(flags, dtype=bool if complete else object)
    if not present:
        return pd.Series([None] * len(raw), dtype=object)
    return pd.Series([v if v else None for v in raw])


def _read_csv(path: Path, columns: list[str] | None, max_rows: int | None) -> pd.DataFrame:
    import pandas as pd

    header = _csv_header(path)
    keep = _selected(header, columns, path)
    values: list[list[str]] = [[] for _ in keep]
    records = _csv_records(path)
    try:
        next(records)   # the header, checked above
        for n, (line, record) in enumerate(records):
            if max_rows is not None and n >= max_rows:
                break
            if len(record) != len(header):
                raise InvalidInputError("path", f"line {line}: has {len(record)} fields, "
                                        f"the header {len(header)}", str(path))
            for out, index in zip(values, keep, strict=True):
                out.append(record[index])
    finally:
        records.close()
    return pd.DataFrame({header[i]: _typed(v) for i, v in zip(keep, values, strict=True)},
                        columns=[header[i] for i in keep])


def _pyarrow(path: Path) -> Any:
    try:
        import pyarrow
    except ImportError:   # pragma: no cover - pyarrow comes with the formats extra
        raise InvalidInputError("path", "reading Parquet, or CSV in batches, needs pyarrow "
                                "(pip install 'xai-sandbox[formats]')", str(path)) from None
    return pyarrow


def _parquet_file(path: Path, columns: list[str] | None) -> tuple[Any, list[str] | None]:
    pa = _pyarrow(path)
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise InvalidInputError("path", f"must be a Parquet file ({exc})", str(path)) from None
    names = list(parquet.schema_arrow.names)
    _check_header(names, path, "the Parquet schema")
    _selected(names, columns, path)
    return parquet, columns


def _read_parquet(path: Path, columns: list[str] | None, max_rows: int | None
                  ) -> pd.DataFrame:
    pa = _pyarrow(path)
    parquet, columns = _parquet_file(path, columns)
    try:
        if max_rows is None:
            table = parquet.read(columns=columns)
        else:
            batches, n = [], 0
            for batch in parquet.iter_batches(batch_size=min(max_rows, _PARQUET_BATCH),
                                              columns=columns):
                batches.append(batch.slice(0, max_rows - n))
                n += batches[-1].num_rows
                if n >= max_rows:
                    break
            schema = parquet.schema_arrow if columns is None else pa.schema(
                [parquet.schema_arrow.field(c) for c in columns])
            table = pa.Table.from_batches(batches, schema=schema)
    except (OSError, pa.ArrowException) as exc:
        raise InvalidInputError("path", f"must be a readable Parquet file ({exc})",
                                str(path)) from None
    return table.to_pandas()


def read_table(path: str | Path, *, columns: Sequence[str] | None = None,
               max_rows: int | None = None) -> pd.DataFrame:
    """Read a CSV or Parquet file into a data frame.

    Parameters
    ----------
    path:
        A ``.csv``, ``.parquet`` or ``.pq`` file.
    columns:
        Only these columns, in this order (default: all, in the file's order).
    max_rows:
        Read only the first ``max_rows`` rows (a positive integer); the rest of the file is
        never read.

    Raises
    ------
    InvalidInputError
        Naming the path (and the line of a CSV file) for a file that is missing, empty,
        not UTF-8, has a field over ``csv.field_size_limit()``, a record with more or fewer
        fields than the header, or repeated or empty column names; naming ``columns`` for a
        column the file does not have.
    """
    p = Path(path)
    kind = _format(p)
    wanted = _columns(columns)
    if max_rows is not None:
        number_in(max_rows, 1, float("inf"), "max_rows", integer=True)
    if kind == "csv":
        return _read_csv(p, wanted, max_rows)
    return _read_parquet(p, wanted, max_rows)


def _rebatch(batches: Iterator[Any], batch_rows: int, pa: Any) -> Iterator[pd.DataFrame]:
    """Frames of exactly ``batch_rows`` rows (the last one shorter) from arrow batches."""
    pending: list[Any] = []
    held = 0
    for batch in batches:
        pending.append(batch)
        held += batch.num_rows
        while held >= batch_rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, batch_rows).to_pandas()
            rest = table.slice(batch_rows)
            pending, held = rest.to_batches(), rest.num_rows
    if held:
        yield pa.Table.from_batches(pending).to_pandas()


def _open_batches(path: Path, kind: str, columns: list[str] | None,
                  batch_rows: int) -> Iterator[Any]:
    """The file's arrow record batches; the file is opened (and its header checked) now,
    its errors while reading are raised as the batches are taken."""
    pa = _pyarrow(path)
    if kind == "parquet":
        parquet, columns = _parquet_file(path, columns)
        batches = parquet.iter_batches(batch_size=batch_rows, columns=columns)
    else:
        import pyarrow.csv as pcsv

        _selected(_csv_header(path), columns, path)
        options = pcsv.ConvertOptions(null_values=[""], strings_can_be_null=True,
                                      include_columns=columns or [])
        try:
            batches = pcsv.open_csv(path, convert_options=options)
        except (OSError, pa.ArrowException) as exc:
            raise InvalidInputError("path", f"must be a CSV file ({_one_line(exc)})",
                                    str(path)) from None
    return _guarded(batches, path, kind, pa)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _guarded(batches: Any, path: Path, kind: str, pa: Any) -> Iterator[Any]:
    try:
        yield from batches
    except (OSError, pa.ArrowException) as exc:
        hint = (" (the column types are inferred from the file's first block; read_table "
                "reads the whole file)") if kind == "csv" else ""
        raise InvalidInputError("path", f"must be a readable {kind.upper()} file "
                                f"({_one_line(exc)}){hint}", str(path)) from None


def iter_table(path: str | Path, batch_rows: int, *,
               columns: Sequence[str] | None = None) -> Iterator[pd.DataFrame]:
    """Stream a CSV or Parquet file as data frames of ``batch_rows`` rows (the last one
    may be shorter), holding about one batch in memory.

    Parameters
    ----------
    path:
        A ``.csv``, ``.parquet`` or ``.pq`` file.
    batch_rows:
        Rows per frame, a positive integer.
    columns:
        Only these columns (default: all).

    Raises
    ------
    InvalidInputError
        As :func:`read_table`; for CSV also a value that does not fit the types pyarrow
        inferred from the first block. The file's header is checked before the first frame.
    """
    p = Path(path)
    kind = _format(p)
    wanted = _columns(columns)
    number_in(batch_rows, 1, float("inf"), "batch_rows", integer=True)
    return _rebatch(_open_batches(p, kind, wanted, batch_rows), batch_rows, _pyarrow(p))
