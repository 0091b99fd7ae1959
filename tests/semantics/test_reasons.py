import numpy as np
import pytest

from xai_sandbox.errors import InvalidInputError
from xai_sandbox.explainers import explain
from xai_sandbox.semantics import load_catalogue, principal_reasons

OUTCOME = {"en": "declined", "zh": "拒绝"}


def _rejected(credit):  # type: ignore[no-untyped-def]
    return [i for i in credit.test
            if int(np.argmax(credit.mlp.adapter.predict(credit.data.X[i : i + 1])[0])) == 1]


def test_at_most_four_ranked_reasons_never_protected(credit):  # type: ignore[no-untyped-def]
    schema = credit.data.schema
    for i in _rejected(credit)[:5]:
        e = explain(credit.mlp, credit.data.X[i : i + 1], method="exact_shapley",
                    target="bad")
        rs = principal_reasons(e, schema, credit.data.rows[i], outcome=OUTCOME)
        assert 1 <= len(rs.reasons) <= 4
        assert [r.rank for r in rs.reasons] == list(range(1, len(rs.reasons) + 1))
        contributions = [r.contribution for r in rs.reasons]
        assert contributions == sorted(contributions, reverse=True)
        assert all(c > 0 for c in contributions)  # only what pushed toward the outcome
        for r in rs.reasons:
            spec = schema.feature(r.feature)
            assert not spec.protected
            # The feature's code where it is true of the value, else "Other" (C1-24).
            assert r.reason_code == (spec.adverse_code(credit.data.rows[i][r.feature])
                                     or "C1-24")
            assert r.impact in ("HIGH", "MEDIUM", "LOW")
            assert "declined" in r.text["en"] and "拒绝" in r.text["zh"]
        # Protected features that pushed toward the outcome are listed apart.
        values = dict(zip(schema.names, e.values[0], strict=True))
        expected = {f.name for f in schema.features if f.protected and values[f.name] > 0}
        assert set(rs.protected_weighed) == expected


def test_subject_view_has_no_raw_numbers(credit):  # type: ignore[no-untyped-def]
    i = _rejected(credit)[0]
    e = explain(credit.mlp, credit.data.X[i : i + 1], method="exact_shapley", target="bad")
    rs = principal_reasons(e, credit.data.schema, credit.data.rows[i], outcome=OUTCOME)
    view = rs.to_dict("zh")
    assert set(view["reasons"][0]) == {"rank", "impact", "text"}
    assert "contribution" not in str(view)


def test_impact_levels_follow_the_share():
    from xai_sandbox.explainers.explanation import Explanation
    from xai_sandbox.models.schema import FeatureSchema

    schema = FeatureSchema.from_dict({"version": "t/1", "features": [
        {"name": n, "kind": "numeric", "reason_code": "C1-09"} for n in "abcdef"]})
    e = Explanation(method="m", values=np.array([[5.0, 2.0, 0.8, 0.5, 1.5, -3.0]]),
                    target=np.array([0]), prediction=np.array([[1.0]]), output_space="logit",
                    parameters={}, library_versions={}, wall_time_s=0.0,
                    feature_names=tuple("abcdef"))
    rs = principal_reasons(e, schema, dict.fromkeys("abcdef", 1.0), outcome="declined")
    assert [r.feature for r in rs.reasons] == ["a", "b", "e", "c"]  # four, f pushed the other way
    assert [r.impact for r in rs.reasons] == ["HIGH", "MEDIUM", "MEDIUM", "LOW"]


def test_catalogue_and_bad_input(credit):  # type: ignore[no-untyped-def]
    cat = load_catalogue()
    assert cat.text("C1-08", "en", "x") == "Income insufficient for amount of credit requested"
    assert cat.text("C1-24", "en", "Loan duration") == "Other: Loan duration"
    assert cat.other("Loan duration", "48 months", "en") == (
        "Other: Loan duration of 48 months weighed against the application")
    with pytest.raises(InvalidInputError, match="shipped reason catalogue"):
        load_catalogue("nope")
    e = explain(credit.mlp, credit.data.X[:1], method="integrated_gradients", target="bad",
                group_features=False)
    with pytest.raises(InvalidInputError, match="one value per schema feature"):
        principal_reasons(e, credit.data.schema, credit.data.rows[0], outcome="declined")
    g = explain(credit.mlp, credit.data.X[:1], method="integrated_gradients", target="bad")
    with pytest.raises(InvalidInputError, match="every feature's value"):
        principal_reasons(g, credit.data.schema, {}, outcome="declined")
    with pytest.raises(InvalidInputError, match="every locale"):
        principal_reasons(g, credit.data.schema, credit.data.rows[0], outcome={"en": "x"})
