"""POST /v1/models as a multipart upload, through a real HTTP server: each format
registers, decides with a full report in raw-feature terms, and is served again after a
restart; a bad upload is a 4xx naming the field; an oversized one is 413."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import yaml

from formatkit import credit, save_all, write_csv
from liveserver import make_settings, prepared, wait_done

UPLOADED = ("xgboost_ubj", "lightgbm_text", "skops", "onnx", "torch_export", "torchscript")
LABELS = {"bad": {"en": "declined", "zh": "拒绝"}, "good": {"en": "approved", "zh": "批准"}}


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    c = credit()
    folder = tmp_path_factory.mktemp("upload")
    saved = save_all(c, folder)
    (folder / "schema.yaml").write_text(yaml.safe_dump(c.schema.to_dict(), allow_unicode=True),
                                        encoding="utf-8")
    write_csv(c, folder / "train.csv", c.train[:400])
    return c, saved, folder


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    live = prepared(make_settings(tmp_path_factory.mktemp("upload-service"))).start()
    try:
        yield live
    finally:
        live.stop()


def _upload(client, kit, fmt, model_id, **fields):
    _c, saved, folder = kit
    path, _, options = saved[fmt]
    files = {"model": (path.name, path.read_bytes()),
             "schema": ("schema.yaml", (folder / "schema.yaml").read_bytes()),
             "data": ("train.csv", (folder / "train.csv").read_bytes())}
    if "weights" in options:
        files["weights"] = (options["weights"].name, options["weights"].read_bytes())
    data = {"model_id": model_id, "class_names": "good,bad",
            "policy": json.dumps({"methods": ["exact_shapley"], "adverse_class": "bad",
                                  "outcome_labels": LABELS}), **fields}
    return client.post("/v1/models", files=files, data=data)


@pytest.mark.parametrize("fmt", UPLOADED)
def test_an_uploaded_model_decides_with_a_full_report_in_raw_features(server, kit, fmt):
    c, saved, _ = kit
    model_id = f"up-{fmt.replace('_', '-')}"
    with server.client("olivia-operator") as client:
        r = _upload(client, kit, fmt, model_id)
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["format"] == fmt and body["source"] == "file"
        if fmt != "torchscript":
            assert body["fingerprint"] == hashlib.sha256(
                saved[fmt][0].read_bytes()).hexdigest()
        assert body["methods"]["exact_shapley"] == "available"
        assert (body["methods"]["integrated_gradients"] == "available") == (
            fmt in ("onnx", "torch_export", "torchscript"))
        row = c.rows[int(c.train[-1])]
        d = client.post("/v1/decisions", json={"model_id": model_id, "subject_id": "s-up",
                                               "features": row})
        assert d.status_code in (201, 202), d.text
        if d.status_code == 202:  # an expensive method: explained by a job
            job = wait_done(server, d.json()["explanation"]["job_url"])
            assert job["status"] == "done", job
    with server.client("carl-compliance") as officer:
        report = officer.get(f"/v1/decisions/{d.json()['decision_id']}/report")
        assert report.status_code == 200, report.text
    full = report.json()
    assert full["model"]["fingerprint_sha256"] == body["fingerprint"]
    # The score is the uploaded model's own, and the reasons name raw features only.
    in_memory = saved[fmt][1]
    x = c.schema.encode(row)
    if hasattr(in_memory, "predict_proba"):
        expected = in_memory.predict_proba(x)[0, 1]
    else:
        import torch

        expected = torch.softmax(in_memory(torch.as_tensor(x, dtype=torch.float32)),
                                 dim=1)[0, 1].item()
    assert d.json()["output"]["score"] == pytest.approx(expected, abs=1e-5)
    features = [r["feature"] for r in full["reasons"]["reasons"]]
    assert set(features) <= set(c.schema.names)
    assert "=" not in json.dumps(full["reasons"])


def test_the_upload_is_served_again_after_a_restart(tmp_path, kit):
    settings = make_settings(tmp_path)
    live = prepared(settings).start()
    try:
        with live.client("olivia-operator") as client:
            first = _upload(client, kit, "lightgbm_text", "restart-me")
            assert first.status_code == 201, first.text
    finally:
        live.stop()
    again = type(live)(settings, live.keys, live.decisions).start()
    try:
        with again.client("olivia-operator") as client:
            listed = {m["key"]: m for m in client.get("/v1/models").json()}
            row = kit[0].rows[3]
            d = client.post("/v1/decisions", json={"model_id": "restart-me",
                                                   "subject_id": "s-r", "features": row})
    finally:
        again.stop()
    assert listed["restart-me@1"]["fingerprint"] == first.json()["fingerprint"]
    assert d.status_code in (201, 202), d.text


def test_bad_uploads_are_4xx_naming_the_field(server, kit, tmp_path):
    _c, _saved, folder = kit
    schema = (folder / "schema.yaml").read_bytes()
    with server.client("olivia-operator") as client:
        garbage = client.post("/v1/models", files={
            "model": ("m.json", b"{not a model"), "schema": ("s.yaml", schema)},
            data={"model_id": "junk", "adverse_class": "bad", "class_names": "good,bad"})
        no_schema = client.post("/v1/models", files={"model": ("m.txt", b"tree\n")},
                                data={"model_id": "junk"})
        odd_name = client.post("/v1/models", files={
            "model": ("m.exe", b"MZ"), "schema": ("s.yaml", schema)},
            data={"model_id": "junk"})
        wrong_pin = _upload(client, kit, "xgboost_ubj", "pinned", sha256="0" * 64)
        no_adverse = _upload(client, kit, "xgboost_ubj", "nopolicy", policy=None)
        unknown = _upload(client, kit, "xgboost_ubj", "extra", colour="blue")
        wrong_type = client.post("/v1/models", content=b"model=1",
                                 headers={"content-type": "text/plain"})
    assert garbage.status_code == 422 and "model" in garbage.text
    assert str(folder) not in garbage.text and "/tmp" not in garbage.text
    assert no_schema.status_code == 422 and "schema" in no_schema.text
    assert odd_name.status_code == 422 and "model.filename" in odd_name.text
    assert wrong_pin.status_code == 409 and "expected_sha256" in wrong_pin.text
    assert no_adverse.status_code == 422 and "adverse_class" in no_adverse.text
    assert unknown.status_code == 422 and "colour" in unknown.text
    assert wrong_type.status_code == 422 and "content-type" in wrong_type.text


def test_a_subject_or_anonymous_caller_cannot_upload(server, kit):
    with server.client() as anonymous:
        assert _upload(anonymous, kit, "xgboost_ubj", "anon").status_code == 401
    with server.client("alice") as subject:
        assert _upload(subject, kit, "xgboost_ubj", "subj").status_code == 403


def test_an_upload_over_its_limit_is_413_and_a_json_body_keeps_its_own(tmp_path, kit):
    live = prepared(make_settings(tmp_path, max_upload_bytes=64 * 1024,
                                  max_body_bytes=4096)).start()
    try:
        with live.client("olivia-operator") as client:
            big = client.post("/v1/models", files={
                "model": ("m.onnx", np.zeros(40_000).tobytes()),
                "schema": ("s.yaml", b"version: '1'")}, data={"model_id": "big"})
            small = _upload(client, kit, "lightgbm_text", "small-enough")
            json_big = client.post("/v1/models", json={"model_id": "x" * 5000})
    finally:
        live.stop()
    assert big.status_code == 413 and "65536" in big.text
    assert small.status_code == 201, small.text  # 64 KiB: over the JSON limit, not this one
    assert json_big.status_code == 413


def _zip(folder, target):
    import zipfile

    with zipfile.ZipFile(target, "w") as z:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                z.write(path, path.relative_to(folder.parent))
    return target


def test_an_mlflow_model_uploads_as_a_zip_and_a_pickle_needs_trust(server, kit, tmp_path):
    import warnings

    import mlflow.lightgbm
    import mlflow.sklearn

    from xai_sandbox.store import Store

    _, saved, folder = kit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mlflow's notes on environments and signatures
        mlflow.lightgbm.save_model(saved["lightgbm_text"][1].booster_, tmp_path / "gbm")
        mlflow.sklearn.save_model(saved["skops"][1], tmp_path / "lr")
    schema = ("schema.yaml", (folder / "schema.yaml").read_bytes())
    common = {"adverse_class": "bad", "class_names": "good,bad"}
    with server.client("olivia-operator") as client:
        gbm = client.post("/v1/models", files={
            "model": ("gbm.zip", _zip(tmp_path / "gbm", tmp_path / "gbm.zip").read_bytes()),
            "schema": schema}, data={"model_id": "mlflow-gbm", **common})
        lr_zip = _zip(tmp_path / "lr", tmp_path / "lr.zip").read_bytes()
        refused = client.post("/v1/models", files={"model": ("lr.zip", lr_zip),
                                                   "schema": schema},
                              data={"model_id": "mlflow-lr", **common})
        trusted = client.post("/v1/models", files={"model": ("lr.zip", lr_zip),
                                                   "schema": schema},
                              data={"model_id": "mlflow-lr", "trust_pickle": "true",
                                    **common})
    assert gbm.status_code == 201, gbm.text
    assert gbm.json()["format"] == "mlflow" and gbm.json()["methods"]["tree_shap"] == \
        "available"
    assert refused.status_code == 422 and "trust_pickle" in refused.text
    assert trusted.status_code == 201, trusted.text
    # The trust is part of the spec the audit log commits to.
    store = Store(server.settings)
    try:
        spec = next(json.loads(m["spec_json"]) for m in store.models()
                    if m["key"] == "mlflow-lr@1")
    finally:
        store.close()
    assert spec["source"]["trust_pickle"] is True
