"""The quality block travels with the explanation: attached once assessed, serialised by
`to_json()`, read back by `from_json()`, absent (not null) before."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import make_mlp
from xai_sandbox.errors import InvalidInputError
from xai_sandbox.explainers import explain
from xai_sandbox.explainers.explanation import Explanation
from xai_sandbox.models.registry import register
from xai_sandbox.quality.assess import QualityThresholds, assess, assessed


@pytest.fixture(scope="module")
def explained():  # type: ignore[no-untyped-def]
    model = register(make_mlp(), model_id="mlp", version="1", class_names=list("abc"),
                     sample_shape=(6,))
    x = np.random.default_rng(0).normal(size=(1, 6)).astype(np.float32)
    es = [explain(model, x, method=m) for m in ("integrated_gradients", "saliency")]
    return model, x, es


def test_assessed_explanations_carry_their_block_in_to_json(explained) -> None:
    model, x, es = explained
    with_block, block = assessed(model, x, es)
    assert [e.method for e in with_block] == [e.method for e in es]
    for e in with_block:
        assert e.assessed and e.quality is not None
        assert e.quality["verdict"] == block["verdict"]
        assert e.quality["principal"] == "integrated_gradients"
        doc = json.loads(e.to_json())
        assert doc["quality"]["methods"].keys() == block["methods"].keys()
        again = Explanation.from_json(e.to_json())
        assert again.quality == doc["quality"] and again.to_json() == e.to_json()
    # The inputs are untouched, and an unassessed explanation serialises as before.
    assert all(not e.assessed for e in es)
    assert "quality" not in es[0].to_dict()
    assert Explanation.from_json(es[0].to_json()).quality is None


def test_the_attached_block_is_a_read_only_copy(explained) -> None:
    model, x, es = explained
    block = assess(model, x, es, thresholds=QualityThresholds(action="withhold"))
    e = es[0].with_quality(block)
    block["verdict"]["action"] = "changed later"
    assert e.quality is not None and e.quality["verdict"]["action"] in ("show", "withhold")
    assert e.quality["thresholds"]["action"] == "withhold"
    with pytest.raises(TypeError):
        e.quality["verdict"] = {}  # type: ignore[index]
    e.to_dict()["quality"]["verdict"]["action"] = "changed too"
    assert e.quality["verdict"]["action"] != "changed too"


def test_with_quality_refuses_what_is_not_a_quality_block(explained) -> None:
    _, _, es = explained
    with pytest.raises(InvalidInputError, match="block"):
        es[0].with_quality({"level": "default"})
    with pytest.raises(InvalidInputError, match="block"):
        es[0].with_quality([1, 2])  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="finite"):
        es[0].with_quality({"verdict": {"reliable": True}, "gap": float("nan")})
