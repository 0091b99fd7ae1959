import numpy as np
import pytest

from xai_sandbox.errors import InvalidInputError
from xai_sandbox.quality import fit_profile


def test_training_rows_are_mostly_in_distribution(credit):  # type: ignore[no-untyped-def]
    X = credit.data.X[credit.train]
    profile = fit_profile(X, credit.data.schema.columns)
    flagged = [a.score > 1.0 for a in profile.assess(X)]
    assert 0.005 <= np.mean(flagged) <= 0.015  # the 99th percentile, by construction
    held_out = profile.assess(credit.data.X[credit.test])
    assert np.mean([a.score > 1.0 for a in held_out]) < 0.1


def test_far_inputs_are_flagged_and_named(credit):  # type: ignore[no-untyped-def]
    schema = credit.data.schema
    profile = fit_profile(credit.data.X[credit.train], schema.columns)
    row = dict(credit.data.rows[credit.test[0]])
    row.update(credit_amount=400_000.0, duration=110.0, age=99.0)
    (a,) = profile.assess(schema.encode(row))
    assert a.out_of_distribution and a.score > 1.0
    assert {"credit_amount", "duration", "age"} <= set(a.unusual)
    (b,) = profile.assess(credit.data.X[credit.train][:1])
    assert b.unusual == ()


def test_bad_input():
    with pytest.raises(InvalidInputError, match="rows >= 10"):
        fit_profile(np.zeros((3, 2)))
    profile = fit_profile(np.random.default_rng(0).normal(size=(50, 3)))
    with pytest.raises(InvalidInputError, match=r"must have shape \(rows, 3\)"):
        profile.assess(np.zeros((1, 4)))
    with pytest.raises(InvalidInputError, match="finite"):
        profile.assess(np.array([[np.nan, 0.0, 0.0]]))


def test_registered_credit_models_keep_a_training_profile(credit):  # type: ignore[no-untyped-def]
    for model in (credit.mlp, credit.lightgbm):
        assert model.profile is not None
        (a,) = model.profile.assess(credit.data.X[credit.train][:1])
        assert a.score >= 0
