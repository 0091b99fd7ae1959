"""Reading the tables a user brings: CSV and Parquet read whole or streamed give the same
values as the file holds; files that cannot be read faithfully are refused naming the path
and the line."""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xai_sandbox.datasets import iter_table, load_german_credit, read_table
from xai_sandbox.errors import InvalidInputError


@pytest.fixture(scope="module")
def credit_frame() -> pd.DataFrame:
    data = load_german_credit()
    frame = pd.DataFrame(list(data.rows))
    frame["class"] = np.where(data.y == 1, "bad", "good")
    return frame


def test_german_credit_round_trips_through_csv_and_parquet(credit_frame, tmp_path):
    credit_frame.to_csv(tmp_path / "c.csv", index=False)
    credit_frame.to_parquet(tmp_path / "c.parquet", index=False)
    for name in ("c.csv", "c.parquet"):
        got = read_table(tmp_path / name)
        assert list(got.columns) == list(credit_frame.columns)
        for column in credit_frame.columns:
            want = credit_frame[column]
            if want.dtype.kind in "if":
                np.testing.assert_allclose(got[column].to_numpy(float), want.to_numpy(float))
            else:
                assert got[column].astype(str).tolist() == want.astype(str).tolist()


def test_columns_and_max_rows_read_only_what_is_asked(credit_frame, tmp_path):
    credit_frame.to_csv(tmp_path / "c.csv", index=False)
    credit_frame.to_parquet(tmp_path / "c.parquet", index=False)
    cols = [str(credit_frame.columns[3]), str(credit_frame.columns[0])]
    for name in ("c.csv", "c.parquet"):
        got = read_table(tmp_path / name, columns=cols, max_rows=7)
        assert list(got.columns) == cols and len(got) == 7
        assert got[cols[1]].astype(str).tolist() == \
            credit_frame[cols[1]].head(7).astype(str).tolist()


def test_csv_types_are_the_narrowest_that_hold_every_value(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("i,f,m,b,s,e\n1,1.5,3,true,a,\n-2,2e3,,FALSE,b,\n")
    got = read_table(path)
    assert got["i"].dtype == np.int64 and got["i"].tolist() == [1, -2]
    assert got["f"].dtype == np.float64 and got["f"].tolist() == [1.5, 2000.0]
    assert got["m"].dtype == np.float64 and got["m"].iloc[0] == 3 and np.isnan(got["m"].iloc[1])
    assert got["b"].tolist() == [True, False]
    assert got["s"].tolist() == ["a", "b"]
    assert got["e"].isna().all()


@given(rows=st.lists(st.tuples(st.integers(-10**6, 10**6),
                               st.floats(-1e6, 1e6, allow_nan=False).map(lambda v: round(v, 3)),
                               st.sampled_from(["x", "y", "zé"])), min_size=1, max_size=40),
       batch=st.integers(1, 9))
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_streamed_batches_concatenate_to_the_whole_table(tmp_path, rows, batch):
    frame = pd.DataFrame(rows, columns=["n", "v", "c"])
    for suffix in ("csv", "parquet"):
        path = tmp_path / f"t.{suffix}"
        if suffix == "csv":
            frame.to_csv(path, index=False)
        else:
            frame.to_parquet(path, index=False)
        parts = list(iter_table(path, batch))
        assert [len(p) for p in parts[:-1]] == [batch] * (len(parts) - 1)
        assert 1 <= len(parts[-1]) <= batch
        whole = pd.concat(parts, ignore_index=True)
        assert whole["n"].tolist() == frame["n"].tolist()
        np.testing.assert_allclose(whole["v"].to_numpy(float), frame["v"].to_numpy(float))
        assert whole["c"].tolist() == frame["c"].tolist()
        assert read_table(path)["n"].tolist() == frame["n"].tolist()


@pytest.mark.parametrize(("content", "rule"), [
    (b"", "the file is empty"),
    (b"a,b\n1,2\n3,\xff\n", "line 3: must be UTF-8"),
    (b"a,b\n1,2\n3\n", "line 3: has 1 fields, the header 2"),
    (b",a\n0,1\n", "every column needs a name"),
    (b"a,a\n1,2\n", "repeated: ['a']"),
    (b'a\n"unclosed\n', "must be a CSV record"),
])
def test_csv_that_cannot_be_read_faithfully_is_refused_naming_the_line(tmp_path, content, rule):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(InvalidInputError, match="path") as caught:
        read_table(path)
    assert rule in str(caught.value)


def test_a_field_over_the_csv_size_limit_is_a_line_error(tmp_path):
    path = tmp_path / "big.csv"
    path.write_text("a\n" + "x" * (csv.field_size_limit() + 10) + "\n")
    with pytest.raises(InvalidInputError, match="line 2"):
        read_table(path)


@pytest.mark.parametrize(("call", "parameter"), [
    (lambda p: read_table(p.with_suffix(".xlsx")), "path"),
    (lambda p: read_table(p.parent / "missing.csv"), "path"),
    (lambda p: read_table(p, columns=["nope"]), "columns"),
    (lambda p: read_table(p, columns="a"), "columns"),
    (lambda p: read_table(p, max_rows=0), "max_rows"),
    (lambda p: list(iter_table(p, 0)), "batch_rows"),
])
def test_bad_arguments_name_the_parameter(tmp_path, call, parameter):
    path = tmp_path / "ok.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(InvalidInputError) as caught:
        call(path)
    assert caught.value.parameter == parameter


def test_a_file_that_is_not_parquet_is_refused(tmp_path):
    path = tmp_path / "x.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(InvalidInputError, match="Parquet"):
        read_table(path)
