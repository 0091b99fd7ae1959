"""Bias heatmaps: weighting by anchor risk, privacy filtering, and the PNG on the real photo
and on a planted document-like image model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from xai_sandbox.errors import InvalidInputError
from xai_sandbox.explainers import explain
from xai_sandbox.models.registry import register
from xai_sandbox.reports.bias import (
    BiasLegend,
    bias_heatmap,
    bias_legend,
    privacy_filter,
    risk_weighted_map,
)
from xai_sandbox.semantics.anchors import align, load_anchors

LIB = load_anchors({"version": "doc/1", "anchors": [
    {"id": "id-digits",
     "label": {"en": "Last four digits of the ID number", "zh": "身份证号后四位"},
     "covers": {"boxes": [[4, 16, 12, 24]]}, "protected": True,
     "regulations": ["GDPR Art. 87 (national identification number)"],
     "risk": {"kind": "compare", "anchor": "page", "ratio": 1}},
    {"id": "page", "label": {"en": "Rest of the page", "zh": "页面其余部分"},
     "covers": {"boxes": [[16, 0, 32, 32]]}},
    {"id": "signature", "label": {"en": "Signature", "zh": "签名"},
     "covers": {"polygons": [[[2, 26], [14, 26], [14, 31], [2, 31]]]}, "protected": True}]})


class Planted(torch.nn.Module):
    """A 'document classifier' whose decision is the mean of the ID-number box."""

    def forward(self, x):
        corner = x[:, :, 16:24, 4:12].mean(dim=(1, 2, 3))
        return torch.stack([-corner, corner], dim=1)


def _document():
    rng = np.random.default_rng(3)
    page = np.ones((32, 32, 3)) * 0.95
    page[2:30:4, 16:30] = 0.2  # lines of "text"
    page[16:24, 4:12] = rng.uniform(0, 1, size=(8, 8, 3))  # the ID digits
    return page


def test_the_planted_region_carries_the_weighted_map_and_the_png_is_written(tmp_path):
    model = register(Planted().eval(), model_id="doc", version="1", class_names=["a", "b"],
                     input_kind="image", sample_shape=(3, 32, 32))
    page = _document()
    x = page.transpose(2, 0, 1)[None].astype(np.float32)
    e = explain(model, x, method="integrated_gradients", target=1)
    matches = align(e, LIB)
    weighted = risk_weighted_map(e, LIB, matches)
    inside = weighted[16:24, 4:12].sum()
    assert inside / weighted.sum() > 0.99
    out = bias_heatmap(page, e, LIB, matches, tmp_path / "doc.png", privacy="blur",
                       title="planted document model")
    with Image.open(out) as png:
        assert png.format == "PNG" and png.size[0] > 400


def _planted():  # type: ignore[no-untyped-def]
    model = register(Planted().eval(), model_id="doc", version="1", class_names=["a", "b"],
                     input_kind="image", sample_shape=(3, 32, 32))
    page = _document()
    e = explain(model, page.transpose(2, 0, 1)[None].astype(np.float32),
                method="integrated_gradients", target=1)
    return page, e, align(e, LIB)


def _title_agrees_with_table(legend: BiasLegend) -> None:
    table = legend.table()
    at_risk = [row[0] for row in table if row[-1] == "yes"]
    assert len(table) == 3 and {row[-1] for row in table} <= {"yes", "no"}
    if at_risk:
        assert legend.title.startswith(f"{len(at_risk)} of 3 anchors at risk: ")
    else:
        assert legend.title.startswith("No anchor at risk")
    for label, *_ in table:
        assert (label in legend.title) == (label in at_risk), label
    for row, (_, _, risk, threshold, verdict) in zip(legend.rows, table, strict=True):
        assert verdict == ("yes" if row.risk >= row.threshold else "no")
        assert (verdict == "yes") == (float(risk) >= float(threshold))  # as printed too


def test_the_title_and_the_anchor_table_come_from_the_same_matches(tmp_path):
    page, e, matches = _planted()
    hit = bias_legend(LIB, matches)                       # the ID digits are at risk
    _title_agrees_with_table(hit)
    assert [r.anchor for r in hit.at_risk] == ["id-digits"]
    assert "Last four digits of the ID number (risk 1.00 >= 0.85" in hit.title

    # The case: a face at risk 0.72 under a threshold of 0.85, its stale hit flag
    # set. The title says no anchor is at risk and the table agrees, row by row.
    stale = [dataclasses.replace(m, risk=0.72, hit=True) if m.anchor == "id-digits" else m
             for m in matches]
    none = bias_legend(LIB, stale)
    _title_agrees_with_table(none)
    assert none.at_risk == () and none.table()[0][2:] == ["0.72", "0.85", "no"]
    assert none.rows[0].verdict() == "risk 0.72 < 0.85"

    # Written out: the PNG carries the very caption and table it draws.
    for legend, matched, name in ((hit, matches, "hit.png"), (none, stale, "none.png")):
        out = bias_heatmap(page, e, LIB, matched, tmp_path / name, title="planted")
        with Image.open(out) as png:
            text = dict(png.text)
        assert text["Title"] == legend.title and text["Description"] == legend.text()


def test_a_risk_just_under_its_threshold_never_prints_as_equal_to_it():
    _, _, matches = _planted()
    near = [dataclasses.replace(m, risk=0.8499) if m.anchor == "id-digits" else m
            for m in matches]
    legend = bias_legend(LIB, near)
    assert legend.at_risk == () and legend.table()[0][2:] == ["0.8499", "0.8500", "no"]
    exact = bias_legend(LIB.with_thresholds({"id-digits": 0.8499}), near)
    assert exact.table()[0][2:] == ["0.85", "0.85", "yes"]      # risk == threshold: a hit
    _title_agrees_with_table(exact)


def test_matches_of_another_library_are_refused():
    _, _, matches = _planted()
    stranger = [dataclasses.replace(matches[0], anchor="face")]
    with pytest.raises(InvalidInputError, match="must name anchors of library 'doc/1'"):
        bias_legend(LIB, stranger)


def test_privacy_blurs_or_blanks_only_protected_regions():
    page = _document()
    blurred = privacy_filter(page, LIB, "blur")
    blank = privacy_filter(page, LIB, "crop")
    assert blurred[16:24, 4:12].std() < page[16:24, 4:12].std() / 2
    assert np.ptp(blank[16:24, 4:12]) == 0
    assert np.ptp(blank[26:31, 2:14]) == 0  # the polygon-masked signature too
    outside = np.ones(page.shape[:2], dtype=bool)
    outside[16:24, 4:12] = False
    outside[26:31, 2:14] = False
    assert np.array_equal(blurred[outside], page[outside])
    assert np.array_equal(privacy_filter(page, LIB, "none"), page)
    with pytest.raises(InvalidInputError):
        privacy_filter(page, LIB, "pixelate")


def test_grad_cam_pp_bias_heatmap_on_the_real_photo(tmp_path):
    from xai_sandbox.demos.images import efficientnet_lite0, load_photo, preprocess

    model = efficientnet_lite0()
    pixels = load_photo("chelsea")
    x = preprocess(pixels)
    e = explain(model, x, method="grad_cam_pp", target=int(model.adapter.predict(x).argmax()))
    lib = load_anchors({"version": "photo/1", "anchors": [
        {"id": "face", "label": {"en": "Face", "zh": "面部"},
         "covers": {"boxes": [[60, 20, 170, 130]]}, "protected": True},
        {"id": "floor", "label": {"en": "Background", "zh": "背景"},
         "covers": {"boxes": [[0, 170, 224, 224]]}}]})
    matches = {m.anchor: m for m in align(e, lib)}
    assert matches["face"].sensitivity > matches["floor"].sensitivity
    out = bias_heatmap(pixels, e, lib, list(matches.values()), tmp_path / "cat.png",
                       privacy="crop")
    assert out.stat().st_size > 10_000
