"""Render one report object as JSON, HTML (Jinja2) and PDF (WeasyPrint).

The HTML and the PDF come from the same template; charts are PNG images embedded as
data URIs, so a report is one self-contained file. WeasyPrint needs the Pango libraries
(Debian: ``libpango-1.0-0 libpangoft2-1.0-0``).
"""

from __future__ import annotations

import base64
import functools
import io
from collections.abc import Callable, Mapping
from typing import Any

import jinja2

from xai_sandbox.audit.canonical import canonical_json

__all__ = ["attribution_chart", "environment", "quality_chart", "render_html", "render_json",
           "render_pdf", "render_pdf_html", "report_context"]


def render_json(report: Mapping[str, Any]) -> bytes:
    """Canonical JSON (RFC 8785): the same bytes for the same report."""
    return canonical_json(dict(report))


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The Jinja2 environment of the report templates (autoescaped, strict)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("xai_sandbox", "data/templates"),
        autoescape=jinja2.select_autoescape(["html"]), undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True)
    env.filters["pct"] = lambda v: "n/a" if v is None else f"{float(v):.2%}"
    env.filters["num"] = lambda v: "n/a" if v is None else f"{float(v):.4g}"
    env.filters["when"] = _when
    return env


def _when(value: str | None) -> str:
    """An RFC 3339 time for people: ``2026-11-22 15:35 UTC``."""
    if not value:
        return ""
    return value[:10] + " " + value[11:16] + " UTC"


def _png_data_uri(figsize: tuple[float, float], draw: Callable[[Any], None]) -> str:
    """Draw on one matplotlib axes and return the figure as a PNG data URI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize, dpi=110)
    try:
        draw(ax)
        ax.tick_params(labelsize=8)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    finally:
        plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def attribution_chart(explanation: Mapping[str, Any], title: str, k: int = 10) -> str:
    """A horizontal bar chart of the ``k`` largest attributions, as a PNG data URI."""
    items = sorted(explanation["attributions"].items(), key=lambda kv: -abs(kv[1]))[:k][::-1]

    def draw(ax: Any) -> None:
        ax.barh([n for n, _ in items], [v for _, v in items],
                color=["#b2182b" if v > 0 else "#2166ac" for _, v in items])
        ax.axvline(0, color="#333", linewidth=0.8)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(f"attribution ({explanation.get('output_space') or 'output'}); red "
                      "pushed toward the decision", fontsize=8)

    return _png_data_uri((6.4, 0.32 * len(items) + 0.9), draw)


def quality_chart(quality: Mapping[str, Any]) -> str | None:
    """Deletion and insertion curves of the principal method, as a PNG data URI (``None``
    where the curves are not defined)."""
    curves = quality["methods"][quality["principal"]]["curves"]
    if not curves.get("defined"):
        return None

    def draw(ax: Any) -> None:
        x = [100 * f for f in curves["fractions"]]
        ax.plot(x, curves["deletion"], color="#b2182b", marker=".",
                label=f"deletion (area {curves['deletion_area']:.2f})")
        ax.plot(x, curves["insertion"], color="#2166ac", marker=".",
                label=f"insertion (area {curves['insertion_area']:.2f})")
        ax.set_xlabel(f"share of {curves['kind']} moved, highest-ranked first (%)", fontsize=8)
        ax.set_ylabel("output (input 1, baseline 0)", fontsize=8)
        ax.set_title(f"{quality['principal']}: deletion and insertion", fontsize=9)
        ax.legend(fontsize=8)

    return _png_data_uri((6.4, 2.6), draw)


def _heat(value: float, scale: float) -> tuple[str, str]:
    """Background and text colours of one cell of the attribution heat table (white text
    on the darker cells, so every cell keeps a 4.5:1 contrast)."""
    if scale <= 0:
        return "#ffffff", "#111111"
    a = min(abs(value) / scale, 1.0)
    r, g, b = (178, 24, 43) if value > 0 else (33, 102, 172)
    mix = [round(255 - (255 - c) * a) for c in (r, g, b)]
    luminance = sum(w * ((c / 255) / 12.92 if c <= 10 else ((c / 255 + 0.055) / 1.055) ** 2.4)
                    for w, c in zip((0.2126, 0.7152, 0.0722), mix, strict=True))
    ink = "#ffffff" if (1.05 / (luminance + 0.05)) >= (luminance + 0.05) / 0.0556 \
        else "#111111"
    return "#{:02x}{:02x}{:02x}".format(*mix), ink


def report_context(report: Mapping[str, Any]) -> dict[str, Any]:
    """What the report sections template draws: the report, one reason chart per method,
    the attribution heat table and the quality curves."""
    explanations = report.get("explanations", [])
    charts = [attribution_chart(e, f"{e['method']}: largest attributions")
              for e in explanations]
    features: list[str] = list(explanations[0]["attributions"]) if explanations else []
    scale = max((abs(v) for e in explanations for v in e["attributions"].values()),
                default=0.0)
    heat = [{"feature": f, "cells": [dict(zip(("value", "colour", "ink"), (
        e["attributions"][f], *_heat(e["attributions"][f], scale)), strict=True))
        for e in explanations]} for f in features]
    return {"r": report, "charts": charts, "heat": heat,
            "methods": [e["method"] for e in explanations],
            "quality_chart": quality_chart(report["quality"]) if "quality" in report
            else None}


def render_html(report: Mapping[str, Any]) -> str:
    """The full report as one self-contained HTML page."""
    return environment().get_template("report.html").render(**report_context(report))


def render_pdf(report: Mapping[str, Any]) -> bytes:
    """The full report as PDF, from the same HTML."""
    return render_pdf_html(render_html(report))


def render_pdf_html(html: str) -> bytes:
    """Any self-contained report page as PDF (WeasyPrint)."""
    import weasyprint

    pdf: bytes = weasyprint.HTML(string=html).write_pdf()
    return pdf
