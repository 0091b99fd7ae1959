"""Batch explanations on Ray (local): each row's values equal explain() on the same row,
the manifest's digests match the shards, and a batch started again resumes: finished
shards are kept, a missing one is computed again, identical to the first run."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from clikit import german_frame
from xai_sandbox.audit.log import Receipt, check_receipt
from xai_sandbox.errors import InvalidInputError, SchemaError
from xai_sandbox.explainers import explain
from xai_sandbox.settings import Settings
from xai_sandbox.store import Store
from xai_sandbox.workflows import Decider
from xai_sandbox.workflows.batch import explain_batch, read_shards
from xai_sandbox.workflows.scoring import outcomes


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    import ray

    tmp = tmp_path_factory.mktemp("batch")
    store = Store(Settings(data_dir=tmp / "data"))
    served = Decider(store).register({
        "model_id": "g", "version": "1",
        "source": {"kind": "builtin", "name": "german-credit-lightgbm"},
        "policy": {"methods": ["tree_shap"], "adverse_class": "bad",
                   "outcome_labels": {c: {"en": c, "zh": c} for c in ("good", "bad")}}})
    frame = german_frame().drop(columns=["class"]).iloc[:900]
    frame.to_parquet(tmp / "rows.parquet")
    try:
        result = explain_batch(served, tmp / "rows.parquet", tmp / "out", shard_rows=300,
                               num_cpus=2)
        yield served, frame, tmp, result
    finally:
        ray.shutdown()
        store.close()


def _table(out) -> pd.DataFrame:
    return pd.concat([t.to_pandas() for t in read_shards(out)], ignore_index=True)


def test_each_row_is_its_own_explanation(batch):
    served, frame, tmp, result = batch
    assert result.rows == 900 and result.shards_computed == 3
    table = _table(tmp / "out")
    assert table["key"].tolist() == [str(i) for i in range(900)]
    rows = [dict(r) for r in frame.to_dict(orient="records")]
    x = served.schema.encode(rows)
    decided, adverse = outcomes(served, served.model.probabilities(x))
    e = explain(served.model, x, method="tree_shap", target=decided)
    cols = [f"attr.{n}" for n in served.schema.names]
    np.testing.assert_allclose(table[cols].to_numpy(), e.values, rtol=0, atol=1e-9)
    assert table["adverse"].tolist() == adverse.tolist()
    np.testing.assert_allclose(table[cols].sum(axis=1),
                               table["prediction"] - table["expected_value"], atol=1e-9)
    # The first reason is the feature pushing hardest toward the decision (never protected).
    protected = {s.name for s in served.schema.features if s.protected}
    for r in range(0, 900, 97):
        row = table.iloc[r]
        pushes = {n: row[f"attr.{n}"] for n in served.schema.names if n not in protected}
        top = max(pushes, key=pushes.get)
        assert row["reason_1_feature"] == (top if pushes[top] > 0 else None)
        assert bool(pd.notna(row["reason_1"])) == bool(row["adverse"] and pushes[top] > 0)


def test_a_batch_started_again_resumes(batch):
    served, _, tmp, result = batch
    out = tmp / "out"
    before = _table(out)
    (out / "part-000001.parquet").unlink()
    again = explain_batch(served, tmp / "rows.parquet", out, shard_rows=300)
    assert (again.shards_skipped, again.shards_computed) == (2, 1)
    assert again.manifest["shards"] == result.manifest["shards"]
    pd.testing.assert_frame_equal(_table(out), before)
    with pytest.raises(InvalidInputError, match=r"output.*method"):
        explain_batch(served, tmp / "rows.parquet", out, shard_rows=300, method="exact_shapley")
    (out / "part-000002.parquet").write_bytes(b"changed")
    with pytest.raises(InvalidInputError, match=r"part-000002\.parquet"):
        _table(out)


def test_bad_arguments_are_named_before_anything_runs(batch):
    served, _, tmp, _ = batch
    for kwargs, name in (({"address": "auto", "num_cpus": 2}, "num_cpus"),
                         ({"num_cpus": 0}, "num_cpus"), ({"shard_rows": 0}, "shard_rows"),
                         ({"method": "nope"}, "method"), ({"max_in_flight": 0}, "max_in_flight"),
                         ({"cpus_per_task": 0}, "cpus_per_task")):
        with pytest.raises(InvalidInputError, match=name):
            explain_batch(served, tmp / "rows.parquet", tmp / "never", **kwargs)
    with pytest.raises(InvalidInputError, match="input"):
        explain_batch(served, tmp / "missing.parquet", tmp / "never")
    assert not (tmp / "never").exists()


def test_a_bad_row_is_named_by_its_row_in_the_input(batch):
    served, frame, tmp, _ = batch
    bad = frame.copy()
    bad.loc[bad.index[377], "duration"] = 500.0
    bad.to_parquet(tmp / "bad.parquet")
    with pytest.raises(SchemaError, match=r"^input row 377\.duration: must lie within"):
        explain_batch(served, tmp / "bad.parquet", tmp / "bad", shard_rows=300)
    assert not (tmp / "bad" / "part-000001.parquet").exists()


def test_typed_errors_survive_pickling_as_built():
    for error in (SchemaError("rows[3].age", "must be a number", "x"),
                  InvalidInputError("k", "must be positive", -1)):
        again = pickle.loads(pickle.dumps(error))
        assert type(again) is type(error) and str(again) == str(error)
        assert (again.parameter, again.rule, again.value) == (
            error.parameter, error.rule, error.value)


def test_tasks_of_several_cores_give_the_same_rows(batch):
    served, _, tmp, _ = batch
    wide = explain_batch(served, tmp / "rows.parquet", tmp / "wide", shard_rows=450,
                         cpus_per_task=2)
    assert wide.shards_computed == 2
    explain_batch(served, tmp / "rows.parquet", tmp / "narrow", shard_rows=450)
    pd.testing.assert_frame_equal(_table(tmp / "wide"), _table(tmp / "narrow"))
    with pytest.raises(InvalidInputError, match=r"cpus_per_task: must be at most the 2 cores"):
        explain_batch(served, tmp / "rows.parquet", tmp / "wider", cpus_per_task=3)


def test_a_recording_batch_writes_each_decision_once_with_its_report(batch):
    from xai_sandbox.workflows.batch_record import decision_ids
    from xai_sandbox.workflows.verify import verify_store

    served, frame, tmp, _ = batch
    frame.iloc[:120].assign(person=[f"p{i}" for i in range(120)]).to_parquet(
        tmp / "few.parquet")
    first = Store(Settings(data_dir=tmp / "data"))
    decider = Decider(first)
    decider.load_registered()
    try:
        done = explain_batch(served, tmp / "few.parquet", tmp / "rec", shard_rows=40,
                             record=first, subject_column="person")
        assert (done.recorded, done.shards_computed) == (120, 3)
        ids = [i for k in range(3) for i in decision_ids(_plan(tmp / "rec"), k, 40)]
        assert first.recorded(ids) == set(ids)
        table = _table(tmp / "rec")
        for r in (0, 41, 119):
            report = decider.full_report(ids[r]).to_dict()
            assert report["decision"]["case_ref"] == table["key"][r] == str(r)
            assert report["output"]["adverse"] == table["adverse"][r]
            if report.get("explanations"):
                got = report["explanations"][0]["attributions"]
                for n in served.schema.names:
                    assert got[n] == pytest.approx(table[f"attr.{n}"][r], abs=1e-9)
        assert first.decisions_of(first.subject_ref("p41"), limit=5)[0]["id"] == ids[41]
        # Receipt-able: the report's receipt verifies with no database.
        entry = check_receipt(Receipt.from_dict(report["receipt"]),
                              first.keys.verifiers())
        assert entry["kind"] == "explanation_generated"
        # Resumed with every shard and decision there: nothing is written twice.
        (tmp / "rec" / "part-000001.parquet").unlink()
        again = explain_batch(served, tmp / "few.parquet", tmp / "rec", shard_rows=40,
                              record=first, subject_column="person")
        assert (again.recorded, again.shards_computed, again.shards_skipped) == (0, 1, 2)
        assert verify_store(first).ok
    finally:
        first.close()
    # Shards written but their decisions not (here: another store): computed again, the
    # same, and every decision written once.
    other = Store(Settings(data_dir=tmp / "other"))
    Decider(other).register(served.spec)
    try:
        third = explain_batch(served, tmp / "few.parquet", tmp / "rec", shard_rows=40,
                              record=other, subject_column="person")
        assert (third.recorded, third.shards_computed) == (120, 3)
        pd.testing.assert_frame_equal(_table(tmp / "rec"), table)
        assert other.recorded(ids) == set(ids) and verify_store(other).ok
    finally:
        other.close()


def _plan(out):
    import json

    return json.loads((out / "plan.json").read_text())
