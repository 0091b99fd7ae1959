"""The global report of a batch agrees with the rows behind it, on two schemas and models
(German credit with LightGBM, Boston HMDA with XGBoost): every mean is the shards' own,
every segment's rows, adverse rate and shares are recomputed here from the shards and the
input, the plotted points are real rows, drift shows where the input moved and nowhere
when it did not; and what the HTML and the PDF print are those numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xgboost
from pypdf import PdfReader

from clikit import german_frame
from hmda import hmda
from xai_sandbox.errors import InvalidInputError
from xai_sandbox.reports.global_report import render_global_html, render_global_pdf
from xai_sandbox.settings import Settings
from xai_sandbox.store import Store
from xai_sandbox.workflows import Decider
from xai_sandbox.workflows.batch import explain_batch, read_shards
from xai_sandbox.workflows.batch_report import global_report


def _labels(*classes: str) -> dict[str, dict[str, str]]:
    return {c: {"en": c, "zh": c} for c in classes}


@pytest.fixture(scope="module")
def batches(tmp_path_factory):
    import ray

    tmp = tmp_path_factory.mktemp("report")
    store = Store(Settings(data_dir=tmp / "data"))
    decider = Decider(store)
    german = decider.register({
        "model_id": "g", "version": "1",
        "source": {"kind": "builtin", "name": "german-credit-lightgbm"},
        "policy": {"methods": ["tree_shap"], "adverse_class": "bad",
                   "outcome_labels": _labels("good", "bad")}})
    h = hmda()
    est = xgboost.XGBClassifier(n_estimators=40, max_depth=3, random_state=0, n_jobs=1)
    est.fit(h.X[h.train], h.y[h.train])
    mortgage = decider.register({
        "model_id": "hmda", "version": "1",
        "source": {"kind": "xgboost_json",
                   "model": bytes(est.get_booster().save_raw("json")).decode(),
                   "schema": h.schema.to_dict(), "class_names": ["approved", "denied"],
                   "training_rows": [h.rows[i] for i in h.train[:700]]},
        "policy": {"methods": ["tree_shap"], "adverse_class": "denied",
                   "outcome_labels": _labels("approved", "denied")}})
    frame = german_frame().drop(columns=["class"])
    frame.to_parquet(tmp / "german.parquet")
    moved = frame.assign(duration=(frame["duration"] * 2).clip(upper=120))
    moved.to_parquet(tmp / "moved.parquet")
    pd.DataFrame(h.rows).to_csv(tmp / "hmda.csv", index=False)
    try:
        explain_batch(german, tmp / "german.parquet", tmp / "german", shard_rows=250,
                      num_cpus=2)
        explain_batch(german, tmp / "moved.parquet", tmp / "moved", shard_rows=250)
        explain_batch(mortgage, tmp / "hmda.csv", tmp / "hmda", shard_rows=600)
    finally:
        ray.shutdown()
        store.close()
    return tmp, {"german": (german, frame), "hmda": (mortgage, pd.read_csv(tmp / "hmda.csv"))}


def _joined(tmp, name, served, inputs) -> pd.DataFrame:
    table = pd.concat([t.to_pandas() for t in read_shards(tmp / name)], ignore_index=True)
    assert len(table) == len(inputs)
    return pd.concat([table, inputs.reset_index(drop=True).add_prefix("x.")], axis=1)


@pytest.mark.parametrize("name", ["german", "hmda"])
def test_the_report_is_the_rows_behind_it(batches, name) -> None:
    tmp, models = batches
    served, inputs = models[name]
    rows = _joined(tmp, name, served, inputs)
    names = list(served.schema.names)
    attrs = np.abs(rows[[f"attr.{n}" for n in names]].to_numpy())
    report = global_report(served, tmp / name, sample_rows=len(rows))
    assert report.rows == report.sample_rows == len(rows)
    means = dict(zip(names, attrs.mean(axis=0), strict=True))
    assert [f.mean_abs for f in report.importance] == pytest.approx(
        sorted(means.values(), reverse=True), abs=1e-12)
    for f in report.importance:
        assert f.mean_abs == pytest.approx(means[f.feature], abs=1e-12)
        assert f.low <= f.mean_abs <= f.high
        assert f.protected == served.schema.feature(f.feature).protected
    assert sum(f.share for f in report.importance) == pytest.approx(1.0)
    # A smaller sample gives wider intervals around the same (all-row) means.
    small = global_report(served, tmp / name, sample_rows=100, n_bootstrap=400)
    width = {f.feature: f.high - f.low for f in report.importance}
    wider = [f.high - f.low > width[f.feature] for f in small.importance if f.mean_abs > 0]
    assert sum(wider) >= 0.8 * len(wider)

    # Each segment: its rows, share adverse and mean shares, recomputed here.
    protected = [n for n in names if served.schema.feature(n).protected]
    proxies = sorted({x for p in protected for x in served.proxies.get(p, ())} - set(protected))
    assert report.protected == tuple(protected) and protected
    totals = attrs.sum(axis=1)
    totals[totals == 0] = 1.0
    share_p = attrs[:, [names.index(p) for p in protected]].sum(axis=1) / totals
    share_x = attrs[:, [names.index(x) for x in proxies]].sum(axis=1) / totals
    assert report.overall["protected_share"] == pytest.approx(share_p.mean(), abs=1e-12)
    assert report.overall["proxy_share"] == pytest.approx(share_x.mean(), abs=1e-12)
    assert report.overall["adverse_rate"] == pytest.approx(rows["adverse"].mean())
    for p in protected:
        segments = [s for s in report.segments if s.feature == p]
        assert sum(s.rows for s in segments) == len(rows)
        spec = served.schema.feature(p)
        if spec.kind != "numeric":
            for s in segments:
                code = s.segment.split(" ")[0]
                mask = (rows[f"x.{p}"].astype(str) == code).to_numpy()
                assert s.rows == mask.sum()
                assert s.adverse_rate == pytest.approx(rows["adverse"][mask].mean())
                assert s.protected_share == pytest.approx(share_p[mask].mean(), abs=1e-12)
                assert s.proxy_share == pytest.approx(share_x[mask].mean(), abs=1e-12)
    # The plotted points are rows of the batch: the value and its attribution together.
    top = report.dependence[0]
    assert top.feature == report.importance[0].feature
    pairs = set(zip(rows[f"x.{top.feature}"].astype(str if top.categorical else float),
                    rows[f"attr.{top.feature}"], strict=True))
    assert all((v, a) in pairs for v, a in zip(top.values, top.attributions, strict=True))


def test_drift_is_where_the_input_moved(batches) -> None:
    tmp, models = batches
    served, _ = models["german"]
    same = global_report(served, tmp / "german", previous=tmp / "german", sample_rows=500)
    assert same.drift is not None and not any(d["drifted"] for d in same.drift)
    assert max(d["psi"] for d in same.drift) == pytest.approx(0.0, abs=1e-9)
    moved = global_report(served, tmp / "moved", previous=tmp / "german", sample_rows=500)
    assert moved.drift is not None
    drifted = {d["feature"] for d in moved.drift if d["drifted"]}
    assert "duration" in drifted
    assert max(moved.drift, key=lambda d: d["psi"])["feature"] == "duration"
    assert moved.previous is not None and moved.previous["rows"] == 1000


def test_html_and_pdf_print_the_numbers_of_the_report(batches) -> None:
    tmp, models = batches
    served, _ = models["german"]
    report = global_report(served, tmp / "moved", previous=tmp / "german", sample_rows=400)
    html = render_global_html(report)
    assert html.count("data:image/png;base64,") == 2
    pdf = render_global_pdf(report)
    (tmp / "global.pdf").write_bytes(pdf)
    text = " ".join(" ".join(p.extract_text().split()) for p in PdfReader(tmp / "global.pdf").pages)
    assert "Global explanation report" in text and "1,000 rows explained with tree_shap" in text
    for f in report.importance[:5]:
        assert f"{f.display} {f.feature} {f.mean_abs:.4g} {f.low:.4g} to {f.high:.4g} " \
               f"{100 * f.share:.1f}%" in text, f.feature
    for s in report.segments:
        assert f"{s.segment} {s.rows:,} {100 * s.adverse_rate:.1f}%" in text, s.segment
    duration = next(d for d in report.drift or () if d["feature"] == "duration")
    assert f"duration {duration['psi']:.3f} {duration['ks']:.3f}" in text


def test_bad_folders_are_named(batches, tmp_path) -> None:
    tmp, models = batches
    german, _ = models["german"]
    mortgage, _ = models["hmda"]
    with pytest.raises(InvalidInputError, match=r"output.*manifest"):
        global_report(german, tmp_path)
    with pytest.raises(InvalidInputError, match=r"served.*model the batch"):
        global_report(mortgage, tmp / "german")
    with pytest.raises(InvalidInputError, match="previous"):
        global_report(german, tmp / "german", previous=tmp_path)
    with pytest.raises(InvalidInputError, match="sample_rows"):
        global_report(german, tmp / "german", sample_rows=1)
