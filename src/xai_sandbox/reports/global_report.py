"""The global report of a batch: one typed object, rendered as JSON, HTML and PDF.

:class:`GlobalReport` holds what a model-risk review reads about a whole batch of
explained decisions: mean |attribution| per feature with bootstrap intervals, each
top feature's attribution against its value, the share of the attribution on protected
features and their proxies per segment, and the drift of the attributions against a
previous batch. It is built by :func:`xai_sandbox.workflows.batch_report.global_report`;
this module only renders it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from xai_sandbox.reports.render import figure_uri

__all__ = [
    "Dependence",
    "FeatureImportance",
    "GlobalReport",
    "SegmentShare",
    "dependence_png",
    "render_global_html",
    "render_global_json",
    "render_global_pdf",
    "segments_png",
]

SCHEMA_VERSION = "xai-sandbox.global-report/1"


@dataclass(frozen=True)
class FeatureImportance:
    """Mean |attribution| of one feature over every row of the batch, its bootstrap
    interval (over the report's sample of rows) and its share of the total."""

    feature: str
    display: str
    mean_abs: float
    low: float
    high: float
    share: float
    protected: bool = False
    proxy_of: tuple[str, ...] = ()


@dataclass(frozen=True)
class Dependence:
    """A feature's attribution against its value, over the sample (raw values: numbers,
    or category codes with their display names)."""

    feature: str
    display: str
    categorical: bool
    values: tuple[Any, ...]
    attributions: tuple[float, ...]
    categories: Mapping[str, str] = field(default_factory=dict)    # code -> display


@dataclass(frozen=True)
class SegmentShare:
    """One segment of a protected feature (a category, or a band of a number), over every
    row of the batch in it: rows, share adverse, and the mean share of |attribution| on
    the protected features and on their proxies."""

    feature: str
    segment: str
    rows: int
    adverse_rate: float
    protected_share: float
    proxy_share: float


@dataclass(frozen=True)
class GlobalReport:
    created_at: str
    model: Mapping[str, str]
    method: str
    output_space: str
    rows: int
    batch: Mapping[str, Any]          # folder, manifest SHA-256, shards
    sample_rows: int
    n_bootstrap: int
    confidence: float
    importance: tuple[FeatureImportance, ...]
    dependence: tuple[Dependence, ...]
    segments: tuple[SegmentShare, ...]
    protected: tuple[str, ...]
    proxies: Mapping[str, tuple[str, ...]]
    overall: Mapping[str, float]      # rows, adverse rate, protected and proxy shares
    drift: tuple[Mapping[str, Any], ...] | None = None
    previous: Mapping[str, Any] | None = None
    library_versions: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["schema_version"] = SCHEMA_VERSION
        return out


def render_global_json(report: GlobalReport) -> bytes:
    return json.dumps(report.to_dict(), indent=2, ensure_ascii=False,
                      default=str).encode("utf-8")


def _figure(figsize: tuple[float, float], rows: int = 1, cols: int = 1) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(rows, cols, figsize=figsize, dpi=110, squeeze=False)


def dependence_png(panels: Sequence[Dependence], cols: int = 3) -> str:
    """Small multiples: each feature's attribution (y) against its value (x); a category's
    rows spread sideways around its position, labelled with its code."""
    import numpy as np

    rows = max(1, -(-len(panels) // cols))
    fig, axes = _figure((3.2 * cols, 2.5 * rows), rows, cols)
    jitter = np.random.default_rng(0)
    for k, ax in enumerate(axes.flat):
        if k >= len(panels):
            ax.set_visible(False)
            continue
        d = panels[k]
        y = np.asarray(d.attributions, dtype=np.float64)
        if d.categorical:
            seen = {str(v) for v in d.values}      # the schema's order, then any others
            codes = [c for c in d.categories if c in seen] + sorted(seen - set(d.categories))
            x = np.array([codes.index(str(v)) for v in d.values], dtype=np.float64)
            x += jitter.uniform(-0.25, 0.25, size=x.size)
            ax.set_xticks(range(len(codes)), codes, rotation=45, fontsize=7)
        else:
            x = np.asarray(d.values, dtype=np.float64)
        ax.scatter(x, y, s=4, alpha=0.4, color="#1f5fa8", linewidths=0)
        ax.axhline(0.0, color="#888", linewidth=0.6)
        ax.set_title(d.display, fontsize=9)
        ax.set_ylabel("attribution", fontsize=7)
        ax.tick_params(labelsize=7)
    return figure_uri(fig)


def segments_png(report: GlobalReport) -> str | None:
    """A heatmap: one row per segment, columns adverse rate, protected share, proxy share."""
    import numpy as np

    if not report.segments:
        return None
    cells = np.array([[s.adverse_rate, s.protected_share, s.proxy_share]
                      for s in report.segments])
    # Each column shaded against its own largest value: the rates differ in scale.
    scaled = cells / np.maximum(cells.max(axis=0, keepdims=True), 1e-12)
    fig, axes = _figure((7.5, 1.0 + 0.3 * len(report.segments)))
    ax = axes[0, 0]
    ax.imshow(scaled, cmap="Reds", vmin=0.0, vmax=1.0, aspect="auto")
    for (i, j), v in np.ndenumerate(cells):
        ax.text(j, i, f"{v:.1%}", ha="center", va="center", fontsize=7,
                color="white" if scaled[i, j] > 0.6 else "black")
    ax.set_xticks(range(3), ["adverse", "share on\nprotected", "share on\nproxies"],
                  fontsize=8)
    ax.set_yticks(range(len(report.segments)),
                  [f"{s.feature}: {s.segment}" for s in report.segments], fontsize=7)
    return figure_uri(fig)


def render_global_html(report: GlobalReport) -> str:
    from xai_sandbox.reports.render import environment

    panels = list(report.dependence)
    return environment().get_template("global_report.html").render(
        r=report, dependence_png=dependence_png(panels) if panels else None,
        segments_png=segments_png(report))


def render_global_pdf(report: GlobalReport) -> bytes:
    from xai_sandbox.reports.render import render_pdf_html

    return render_pdf_html(render_global_html(report))
