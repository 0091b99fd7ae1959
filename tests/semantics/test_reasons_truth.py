"""Every stated reason is true of the decision it explains: its sign agrees with the
attribution, its value phrase with the input, its side of the reference with the numbers,
its code with what the schema says the code fits; approved people are told what helped.

Run over a few hundred decisions of two real credit data sets with different schemas
(German credit; Boston HMDA, tests/hmda.py) and four models, each assertion computed here
from the data, not by the library's own checker (which must agree, and must catch every
planted falsehood)."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest

from hmda import hmda
from xai_sandbox.explainers import explain
from xai_sandbox.models.schema import FeatureSchema
from xai_sandbox.semantics import check_reasons, load_catalogue, principal_reasons

LABELS = {"german": ({"en": "approved", "zh": "批准"}, {"en": "declined", "zh": "拒绝"}),
          "hmda": ({"en": "approved", "zh": "批准"}, {"en": "denied", "zh": "拒绝"})}
CATALOGUE = load_catalogue()


def _cases(credit: Any) -> list[tuple[str, Any, FeatureSchema, np.ndarray, list[dict[str, Any]],
                                      str, np.ndarray]]:
    h = hmda()
    g = credit.data
    return [("german", credit.mlp, g.schema, g.X, g.rows, "integrated_gradients", credit.test),
            ("german", credit.lightgbm, g.schema, g.X, g.rows, "tree_shap", credit.test),
            ("hmda", h.lightgbm, h.schema, h.X, h.rows, "tree_shap", h.test),
            ("hmda", h.logistic, h.schema, h.X, h.rows, "exact_shapley", h.test)]


def _decisions(model: Any, X: np.ndarray, test: np.ndarray, n: int) -> list[int]:
    """Up to n/2 adverse and n/2 favourable decisions of the test rows."""
    decided = model.adapter.predict(X[test]).argmax(axis=1)
    adverse = [int(i) for i, d in zip(test, decided, strict=True) if d == 1][: n // 2]
    favourable = [int(i) for i, d in zip(test, decided, strict=True) if d == 0][: n // 2]
    return adverse + favourable


def _assert_true(reasons: Any, e: Any, schema: FeatureSchema, row: dict[str, Any],
                 reference: dict[str, Any], adverse: bool, label: dict[str, str]) -> None:
    values = dict(zip(schema.names, e.values[0], strict=True))
    features = [r.feature for r in reasons.reasons]
    assert len(features) == len(set(features)) <= 4  # no feature twice: no contradiction
    pushing = sorted((v for n, v in values.items() if v > 0 and not schema.feature(n).protected),
                     reverse=True)
    assert [values[f] for f in features] == pytest.approx(pushing[:4])  # the largest, in order
    for r in reasons.reasons:
        spec = schema.feature(r.feature)
        value, ref = row[r.feature], reference[r.feature]
        # Sign: the factor pushed toward this very outcome.
        assert r.contribution == pytest.approx(values[r.feature]) and r.contribution > 0
        for loc in ("en", "zh"):
            assert schema.display_value(r.feature, value, loc) in r.text[loc]
            assert label[loc] in r.text[loc]
        en = r.text["en"]
        # Side of the reference: said only when true.
        if "higher than for a typical" in en:
            assert float(value) > float(ref)
        if "lower than for a typical" in en:
            assert float(value) < float(ref)
        if spec.kind == "numeric" and float(value) != float(ref):
            assert ("higher" if float(value) > float(ref) else "lower") in en
        if not adverse:
            # What helped: no adverse-action code, no catalogue text of one.
            assert r.reason_code is None and r.direction == "favourable" and "helped" in en
            assert not any(t["en"] in en for c, t in CATALOGUE.texts.items() if c != "C1-24")
            continue
        assert r.direction == "adverse" and "pushed the decision toward" in en
        if r.reason_code == "C1-24":
            assert f"Other: {spec.display['en']} of" in en  # "Other" names the factor
            continue
        assert CATALOGUE.texts[r.reason_code]["en"] in en
        # The code's text is never contradicted by the value.
        if spec.kind == "categorical":
            cat = spec.category(value)
            assert not (spec.order and value == spec.order[-1])  # the best value is no fault
            assert cat is not None and (not cat.own_code or cat.reason_code == r.reason_code)
            if spec.order and value in spec.order and ref in spec.order:
                assert spec.order.index(value) <= spec.order.index(ref)  # not better than typical
        elif spec.monotone == "increasing":
            assert float(value) >= float(ref)
        elif spec.monotone == "decreasing":
            assert float(value) <= float(ref)


def test_every_reason_is_true_across_two_schemas_and_four_models(credit) -> None:  # type: ignore[no-untyped-def]
    seen = {"adverse": 0, "favourable": 0, "other": 0, "coded": 0}
    for data, model, schema, X, rows, method, test in _cases(credit):
        reference = schema.decode(np.atleast_2d(model.reference))[0]
        for i in _decisions(model, X, test, 60):
            decided = int(model.adapter.predict(X[i : i + 1])[0].argmax())
            adverse = decided == 1
            label = LABELS[data][decided]
            e = explain(model, X[i : i + 1], method=method,
                        target=model.class_names[decided])
            reasons = principal_reasons(e, schema, rows[i], outcome=label, adverse=adverse,
                                        reference=reference)
            _assert_true(reasons, e, schema, rows[i], reference, adverse, label)
            assert check_reasons(reasons, e, schema, rows[i], outcome=label,
                                 reference=reference) == []
            seen["adverse" if adverse else "favourable"] += 1
            for r in reasons.reasons:
                if adverse:
                    seen["other" if r.reason_code == "C1-24" else "coded"] += 1
    # The run covered both kinds of outcome and both kinds of adverse reason.
    assert seen["adverse"] >= 60 and seen["favourable"] >= 100
    assert seen["coded"] > 0 and seen["other"] > 0


def _one(credit: Any) -> tuple[Any, ...]:
    g = credit.data
    reference = g.schema.decode(np.atleast_2d(credit.mlp.reference))[0]
    i = _decisions(credit.mlp, g.X, credit.test, 2)[0]
    e = explain(credit.mlp, g.X[i : i + 1], method="exact_shapley", target="bad")
    rs = principal_reasons(e, g.schema, g.rows[i], outcome=LABELS["german"][1],
                           reference=reference)
    return rs.to_dict(), e, g.schema, g.rows[i], reference


@pytest.mark.parametrize("tamper", ["code", "value", "sign", "direction", "protected",
                                    "twice", "side", "outcome"])
def test_the_checker_catches_each_planted_falsehood(credit, tamper: str) -> None:  # type: ignore[no-untyped-def]
    body, e, schema, row, reference = _one(credit)
    bad = copy.deepcopy(body)
    first = bad["reasons"][0]
    if tamper == "code":
        first["reason_code"] = "C1-21" if first["reason_code"] != "C1-21" else "C1-20"
    elif tamper == "value":
        shown = schema.display_value(first["feature"], row[first["feature"]], "en")
        first["text"]["en"] = first["text"]["en"].replace(shown, "something else", 1)
    elif tamper == "sign":
        first["contribution"] = -first["contribution"]
    elif tamper == "direction":
        bad["adverse"] = False
    elif tamper == "protected":
        first["feature"] = "age"
    elif tamper == "twice":
        bad["reasons"].append({**first, "rank": len(bad["reasons"]) + 1})
    elif tamper == "side":
        text = first["text"]["en"]
        first["text"]["en"] = (text.replace("higher", "lower") if "higher" in text
                               else text.replace("lower", "higher") if "lower" in text
                               else text + " It is higher than for a typical applicant.")
    elif tamper == "outcome":
        first["text"]["zh"] = first["text"]["zh"].replace("拒绝", "批准")
    label = LABELS["german"][1]
    assert check_reasons(body, e, schema, row, outcome=label, reference=reference) == []
    problems = check_reasons(bad, e, schema, row, outcome=label, reference=reference)
    assert problems and all("reason" in p for p in problems)
    assert str(row[first["feature"]]) not in " ".join(problems) or tamper == "protected"
