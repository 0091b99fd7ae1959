"""Anchor libraries: validation with clear errors, no code from files, and alignment that
puts the highest sensitivity on a planted dependency (tabular, image, text)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xai_sandbox.errors import InvalidInputError, SchemaError
from xai_sandbox.explainers import explain
from xai_sandbox.models.registry import register
from xai_sandbox.models.schema import FeatureSchema
from xai_sandbox.semantics.anchors import align, load_anchors

LABEL = {"en": "x", "zh": "x"}


def _lib(*anchors):
    return {"version": "t/1", "anchors": list(anchors)}


def _anchor(**over):
    return {"id": "a", "label": LABEL, "covers": {"features": ["f0"]}, **over}


@pytest.mark.parametrize(("anchor", "path"), [
    (_anchor(id="Bad Id"), "anchors[0].id"),
    (_anchor(label={"en": "x"}), "anchors[0].label"),
    (_anchor(covers={}), "anchors[0].covers"),
    (_anchor(covers={"boxes": [[5, 0, 1, 1]]}), "anchors[0].covers.boxes[0]"),
    (_anchor(risk={"kind": "eval", "code": "1"}), "anchors[0].risk.kind"),
    (_anchor(risk={"kind": "share", "at": 2}), "anchors[0].risk.at"),
    (_anchor(risk={"kind": "value", "feature": "f0"}), "anchors[0].risk"),
    (_anchor(risk={"kind": "compare", "anchor": "nowhere"}), "anchors[0].risk.anchor"),
    (_anchor(threshold=0), "anchors[0].threshold"),
    (_anchor(colour="red"), "anchors[0]"),
])
def test_bad_anchors_name_the_field(anchor, path):
    with pytest.raises(SchemaError) as err:
        load_anchors(_lib(anchor))
    assert err.value.parameter == path


def test_duplicate_ids_and_unknown_features_are_refused():
    with pytest.raises(SchemaError, match="unique"):
        load_anchors(_lib(_anchor(), _anchor()))
    schema = FeatureSchema.from_dict({"version": "s/1", "features": [
        {"name": "f1", "kind": "numeric"}]})
    with pytest.raises(SchemaError) as err:
        load_anchors(_lib(_anchor())).check_schema(schema)
    assert err.value.parameter == "anchors[0].covers.features"


def test_a_file_cannot_build_objects(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("version: x\nanchors: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(SchemaError, match="plain YAML"):
        load_anchors(path)
    with pytest.raises(InvalidInputError):
        load_anchors("no-such-library")


def test_the_shipped_library_fits_the_german_credit_schema():
    from xai_sandbox.demos.credit import credit_models

    lib = load_anchors("german-credit")
    lib.check_schema(credit_models().data.schema)
    assert {a.id for a in lib.anchors if a.protected} >= {
        "sex-and-marital-status", "age", "national-origin"}


def test_tabular_alignment_finds_the_planted_feature():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 5))
    y = (X[:, 3] > 0).astype(int)  # the label is decided by f3 alone
    from sklearn.ensemble import GradientBoostingClassifier

    est = GradientBoostingClassifier(n_estimators=50, random_state=0).fit(X, y)
    names = [f"f{i}" for i in range(5)]
    schema = FeatureSchema.from_dict({"version": "p/1", "features": [
        {"name": n, "kind": "numeric"} for n in names]})
    model = register(est, model_id="planted", version="1", class_names=["no", "yes"],
                     schema=schema)
    lib = load_anchors(_lib(*[{"id": f"a{i}", "label": LABEL, "covers": {"features": [n]}}
                              for i, n in enumerate(names)]))
    e = explain(model, X[:1], method="tree_shap", target=1)
    k = explain(model, X[:1], method="kernel_shap", target=1, random_state=0,
                background=X[:50])
    matches = align([e, k], lib, row=dict(zip(names, X[0], strict=True)))
    assert matches[0].anchor == "a3" and matches[0].sensitivity > 0.8
    assert matches[0].confidence is not None and matches[0].confidence > 0.8
    assert abs(sum(m.sensitivity for m in matches) - 1) < 1e-9


def test_image_alignment_finds_the_planted_region():
    class Planted(torch.nn.Module):  # the class logit is the mean of one 8x8 corner
        def forward(self, x):
            corner = x[:, :, 16:24, 4:12].mean(dim=(1, 2, 3))
            return torch.stack([-corner, corner], dim=1)

    model = register(Planted().eval(), model_id="doc", version="1", class_names=["a", "b"],
                     input_kind="image", sample_shape=(3, 32, 32))
    x = np.random.default_rng(1).uniform(0.2, 1, size=(1, 3, 32, 32)).astype(np.float32)
    e = explain(model, x, method="integrated_gradients", target=1)
    lib = load_anchors(_lib(
        {"id": "id-digits", "label": LABEL, "covers": {"boxes": [[4, 16, 12, 24]]},
         "risk": {"kind": "compare", "anchor": "rest", "ratio": 1}},
        {"id": "rest", "label": LABEL, "covers": {"boxes": [[16, 0, 32, 32]]}}))
    matches = {m.anchor: m for m in align(e, lib)}
    assert matches["id-digits"].sensitivity > 0.99 and matches["rest"].sensitivity < 0.01
    assert matches["id-digits"].hit and matches["id-digits"].confidence is None


def test_text_phrases_match_tokens():
    from xai_sandbox.explainers.explanation import Explanation

    tokens = ["the", "loss", "was", "possibly", "caused", "by", "water"]
    values = np.array([[0.0, 0.1, 0.0, 0.7, 0.1, 0.0, 0.1]])
    e = Explanation(method="manual", values=values, target=np.array([0]),
                    prediction=np.zeros((1, 2)), output_space="logit", parameters={},
                    library_versions={}, wall_time_s=0.0)
    lib = load_anchors(_lib({"id": "hedging", "label": LABEL,
                             "covers": {"phrases": ["possibly", "might be"]},
                             "risk": {"kind": "share", "at": 0.5}}))
    [m] = align(e, lib, tokens=tokens)
    assert m.sensitivity == pytest.approx(0.7) and m.hit


def test_value_rules_read_the_input():
    lib = load_anchors(_lib(_anchor(risk={"kind": "value", "feature": "f0", "equals":
                                          "missing"})))
    from xai_sandbox.explainers.explanation import Explanation

    e = Explanation(method="manual", values=np.array([[1.0]]), target=np.array([0]),
                    prediction=np.zeros((1, 2)), output_space="logit", parameters={},
                    library_versions={}, wall_time_s=0.0, feature_names=("f0",))
    assert align(e, lib, row={"f0": "missing"})[0].hit
    assert not align(e, lib, row={"f0": "given"})[0].hit


def test_polygon_masks_cover_their_inside():
    from xai_sandbox.semantics.anchors import region_mask

    lib = load_anchors(_lib({"id": "tri", "label": LABEL,
                             "covers": {"polygons": [[[0, 0], [10, 0], [0, 10]]]}}))
    mask = region_mask(lib.anchors[0], (20, 20))
    assert 40 <= mask.sum() <= 60 and mask[1, 1] and not mask[9, 9]
    with pytest.raises(SchemaError) as err:
        load_anchors(_lib({"id": "bad", "label": LABEL, "covers": {"polygons": [[[0, 0]]]}}))
    assert err.value.parameter == "anchors[0].covers.polygons[0]"


def test_a_stochastic_method_gets_confidence_from_a_second_seed(tmp_path):
    from xai_sandbox.demos.credit import credit_models
    from xai_sandbox.service.demo import CREDIT_LABELS
    from xai_sandbox.settings import Settings
    from xai_sandbox.store import Store
    from xai_sandbox.workflows import Decider

    store = Store(Settings(data_dir=tmp_path))
    try:
        decider = Decider(store)
        decider.register({"model_id": "credit-kernel", "version": "1",
                          "source": {"kind": "builtin", "name": "german-credit-lightgbm"},
                          "policy": {"methods": ["kernel_shap"], "adverse_class": "bad",
                                     "outcome_labels": CREDIT_LABELS},
                          "anchors": "german-credit"})
        out = decider.decide(model_id="credit-kernel", subject_id="k",
                             features=credit_models().data.rows[1])
        job = decider.jobs.claim(out.job_id)
        assert decider.run_job(job) is not None
        body = store.latest_report(out.decision_id)["body"]
    finally:
        store.close()
    stability = body["reliability"]["stability"]["kernel_shap"]
    assert stability["deterministic"] is False and len(stability["seeds"]) == 2
    confidences = [m["confidence"] for m in body["anchors"]["matches"]]
    assert all(c is not None and 0 <= c <= 1 for c in confidences)
