"""Counterfactuals: valid (re-scored), feasible (mutable, bounds, monotone), diverse."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xai_sandbox.counterfactuals import NO_FEASIBLE_CHANGE, find_counterfactuals
from xai_sandbox.errors import InvalidInputError, InvalidTargetError, UnsupportedModelError
from xai_sandbox.models import register
from xai_sandbox.models.schema import FeatureSchema


def _rejected(credit, model, n=4):  # type: ignore[no-untyped-def]
    rows = [i for i in credit.test
            if int(np.argmax(model.adapter.predict(credit.data.X[i : i + 1])[0])) == 1]
    return rows[:n]


@pytest.mark.parametrize("which", ["mlp", "lightgbm"])
def test_options_flip_and_respect_every_constraint(credit, which):  # type: ignore[no-untyped-def]
    model = getattr(credit, which)
    schema = credit.data.schema
    train = credit.data.X[credit.train]
    for i in _rejected(credit, model):
        cfs = find_counterfactuals(model, credit.data.rows[i], desired_class="good",
                                   data=train, k=3)
        assert cfs.found and 1 <= len(cfs.options) <= 3
        costs = [o.cost for o in cfs.options]
        assert costs == sorted(costs)
        for option in cfs.options:
            # Re-scored independently: the new row is approved.
            p = model.adapter.predict(schema.encode(option.row))[0]
            assert int(np.argmax(p)) == 0
            for change in option.changes:
                spec = schema.feature(change.feature)
                assert spec.mutable and not spec.protected
                assert change.before != change.after
                if spec.kind == "numeric":
                    low, high = spec.bounds
                    assert low <= change.after <= high
                    col = train[:, schema.columns.index(spec.name)]
                    assert col.min() <= change.after <= col.max()
                    if spec.monotone == "increasing":  # more of it, more risk
                        assert change.after < change.before
                    if spec.monotone == "decreasing":
                        assert change.after > change.before
            untouched = {f for f in schema.names} - set(option.features)
            assert all(option.row[f] == cfs.original[f] for f in untouched)


def test_options_are_diverse_when_possible(credit):  # type: ignore[no-untyped-def]
    i = _rejected(credit, credit.mlp)[0]
    cfs = find_counterfactuals(credit.mlp, credit.data.rows[i], desired_class="good",
                               data=credit.data.X[credit.train], k=3)
    sets = [set(o.features) for o in cfs.options]
    assert len({frozenset(s) for s in sets}) == len(sets)


def _toy(protected_matters: bool):  # type: ignore[no-untyped-def]
    schema = FeatureSchema.from_dict({"version": "toy/1", "features": [
        {"name": "age", "kind": "numeric", "bounds": [18, 100], "protected": True,
         "mutable": True},
        {"name": "history", "kind": "numeric", "bounds": [0, 10], "mutable": False},
        {"name": "savings", "kind": "numeric", "bounds": [0, 100], "mutable": True,
         "monotone": "decreasing"}]})
    lin = torch.nn.Linear(3, 2).eval()
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.zero_()
        if protected_matters:   # only age and history decide: nothing may change them
            lin.weight[1] = torch.tensor([1.0, 1.0, 0.0])
        else:                   # savings decide: more savings, less risk
            lin.weight[1] = torch.tensor([0.0, 0.0, -1.0])
            lin.bias[1] = 30.0
    return register(lin, model_id="toy", version="1", class_names=["approved", "rejected"],
                    schema=schema)


def test_no_feasible_change_is_said_plainly():
    model = _toy(protected_matters=True)
    cfs = find_counterfactuals(model, {"age": 40, "history": 5, "savings": 10},
                               desired_class="approved")
    assert not cfs.found and cfs.message == NO_FEASIBLE_CHANGE
    assert "age" not in cfs.constraints["mutable_features"]  # protected overrides mutable


def test_monotone_direction_is_respected():
    model = _toy(protected_matters=False)
    cfs = find_counterfactuals(model, {"age": 40, "history": 5, "savings": 10},
                               desired_class="approved")
    assert cfs.found
    for option in cfs.options:
        assert option.features == ("savings",)
        assert option.row["savings"] > 30  # the boundary of the linear model
    assert cfs.options[0].row["savings"] <= min(o.row["savings"] for o in cfs.options)


def test_already_in_the_desired_class():
    model = _toy(protected_matters=False)
    cfs = find_counterfactuals(model, {"age": 40, "history": 5, "savings": 90},
                               desired_class="approved")
    assert not cfs.found and cfs.original_probability > 0.5


def test_bad_input_is_a_typed_error(credit):  # type: ignore[no-untyped-def]
    row = credit.data.rows[0]
    with pytest.raises(InvalidInputError, match="k: must be an integer >= 1"):
        find_counterfactuals(credit.mlp, row, k=0)
    with pytest.raises(InvalidTargetError, match="desired_class"):
        find_counterfactuals(credit.mlp, row, desired_class="excellent")
    with pytest.raises(InvalidInputError, match="checking_status: must be one of"):
        find_counterfactuals(credit.mlp, {**row, "checking_status": "A99"})
    plain = register(torch.nn.Linear(3, 2).eval(), model_id="p", version="1",
                     class_names=["a", "b"])
    with pytest.raises(UnsupportedModelError, match="feature schema"):
        find_counterfactuals(plain, np.zeros((1, 3)))
