"""A batch across a Ray cluster of two nodes on this machine (``ray.cluster_utils.Cluster``:
a head and a worker node, each its own raylet), joined by address as a real cluster is:
both nodes compute shards, and the rows equal a local run's."""

from __future__ import annotations

import pandas as pd
import pytest

from clikit import german_frame
from xai_sandbox.settings import Settings
from xai_sandbox.store import Store
from xai_sandbox.workflows import Decider
from xai_sandbox.workflows.batch import explain_batch, read_shards


@pytest.fixture
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    two = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "object_store_memory": 80 * 2**20, "include_dashboard": False})
    two.add_node(num_cpus=1, object_store_memory=80 * 2**20)
    two.wait_for_nodes()
    try:
        yield two
    finally:
        ray.shutdown()
        two.shutdown()


def _table(out) -> pd.DataFrame:
    return pd.concat([t.to_pandas() for t in read_shards(out)], ignore_index=True)


def test_a_batch_runs_on_both_nodes_of_a_cluster(cluster, tmp_path) -> None:
    import ray

    store = Store(Settings(data_dir=tmp_path / "data"))
    try:
        served = Decider(store).register({
            "model_id": "g", "version": "1",
            "source": {"kind": "builtin", "name": "german-credit-mlp"},
            "policy": {"methods": ["integrated_gradients"], "adverse_class": "bad",
                       "outcome_labels": {c: {"en": c, "zh": c} for c in ("good", "bad")}}})
    finally:
        store.close()
    german_frame().drop(columns=["class"]).iloc[:240].to_parquet(tmp_path / "rows.parquet")
    result = explain_batch(served, tmp_path / "rows.parquet", tmp_path / "cluster",
                           shard_rows=20, address=cluster.address)
    assert len(ray.nodes()) == 2 and result.cores == 2.0
    assert result.nodes == 2 and result.rows == 240
    ray.shutdown()
    local = explain_batch(served, tmp_path / "rows.parquet", tmp_path / "local",
                          shard_rows=20, num_cpus=1)
    assert local.nodes == 1
    pd.testing.assert_frame_equal(_table(tmp_path / "cluster"), _table(tmp_path / "local"))
