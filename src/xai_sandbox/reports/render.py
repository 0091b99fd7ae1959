"""Render one report object as JSON, HTML (Jinja2) and PDF (WeasyPrint).

The HTML and the PDF come from the same template; charts are PNG images embedded as
data URIs, so a report is one self-contained file. WeasyPrint needs the Pango libraries
(Debian: ``libpango-1.0-0 libpangoft2-1.0-0``) and, for Chinese text, a CJK font
(``fonts-wqy-microhei``, which ``make demo`` and ``make test`` install).

Before a PDF is written, every character of the page's text is looked up in the fonts of
its CSS font stacks (each family resolved to a file by fontconfig's ``fc-match``); a
character none of them has would print as an empty box, so the render stops with
:class:`~xai_sandbox.errors.RenderError` naming the characters and the fonts tried.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import html.parser
import io
import json
import re
import shutil
import subprocess
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any

import jinja2
import markupsafe

from xai_sandbox.audit.canonical import canonical_json
from xai_sandbox.errors import RenderError
from xai_sandbox.reports.report import Report

__all__ = ["RECEIPT_BEGIN", "RECEIPT_END", "RECEIPT_WIDTH", "attribution_chart",
           "check_glyphs", "environment", "figure_uri", "font_stacks", "quality_chart",
           "receipt_lines", "render_html", "render_json", "render_pdf", "render_pdf_html",
           "report_context"]

RECEIPT_BEGIN = "-----BEGIN XAI-SANDBOX RECEIPT-----"
RECEIPT_END = "-----END XAI-SANDBOX RECEIPT-----"
RECEIPT_WIDTH = 64


def render_json(report: Mapping[str, Any]) -> bytes:
    """Canonical JSON (RFC 8785): the same bytes for the same report."""
    return canonical_json(_plain(report))


def _plain(report: Mapping[str, Any]) -> dict[str, Any]:
    """A :class:`~xai_sandbox.reports.report.Report` (or a report body) as plain JSON data."""
    return report.to_dict() if isinstance(report, Report) else dict(report)


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The Jinja2 environment of the report templates (autoescaped, strict)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("xai_sandbox", "data/templates"),
        autoescape=jinja2.select_autoescape(["html"]), undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True, finalize=printable)
    env.filters["pct"] = lambda v: "n/a" if v is None else f"{float(v):.2%}"
    env.filters["num"] = lambda v: "n/a" if v is None else f"{float(v):.4g}"
    env.filters["when"] = _when
    env.filters["written"] = written
    return env


_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e"
                          r"\u2060-\u2064\ufeff\ue000-\uf8ff\U000f0000-\U0010ffff]")


def printable(value: Any) -> Any:
    """Every value a template prints, with control, format and private-use characters
    shown as U+FFFD: text people wrote (a review's rationale, an access's purpose) may hold
    them, and no font draws them, so the PDF's glyph check would refuse the whole report."""
    if not isinstance(value, str):
        return value
    cleaned = _UNPRINTABLE.sub("\ufffd", value)
    # A macro's output is already-escaped markup: it stays markup (U+FFFD is no HTML syntax).
    return markupsafe.Markup(cleaned) if isinstance(value, markupsafe.Markup) else cleaned


_BODY_FONTS = ("DejaVu Sans", "WenQuanYi Micro Hei")


def written(value: Any) -> str:
    """Text a person wrote (a rationale, a purpose, a name): any character the report's
    fonts cannot draw prints as U+FFFD, so what someone typed never stops the report from
    rendering; the report's own words still go through the strict glyph check."""
    text = "" if value is None else str(value)
    covered = _body_coverage()
    if not covered:
        return text
    return "".join(c if ord(c) in covered or c in "\n\t" else "\ufffd" for c in text)


@functools.lru_cache(maxsize=1)
def _body_coverage() -> frozenset[int]:
    """The code points the body fonts draw, read once per process."""
    covered: set[int] = set()
    for family in _BODY_FONTS:
        found = _font_file(family)
        if found is not None:
            covered |= _cmap(found[0], found[1])
    return frozenset(covered)


def _when(value: str | None) -> str:
    """An RFC 3339 time for people: ``2026-11-22 15:35 UTC``."""
    if not value:
        return ""
    return value[:10] + " " + value[11:16] + " UTC"


def png_data_uri(figsize: tuple[float, float], draw: Callable[[Any], None]) -> str:
    """Draw on one matplotlib axes and return the figure as a PNG data URI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize, dpi=110)
    try:
        draw(ax)
        ax.tick_params(labelsize=8)
    except BaseException:
        plt.close(fig)
        raise
    return figure_uri(fig)


def figure_uri(fig: Any) -> str:
    """A matplotlib figure, laid out tight, as a PNG data URI (the figure is closed)."""
    import matplotlib.pyplot as plt

    try:
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

    return png_data_uri((6.4, 0.32 * len(items) + 0.9), draw)


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

    return png_data_uri((6.4, 2.6), draw)


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
    report = _plain(report)
    explanations = report.get("explanations", [])
    charts = [attribution_chart(e, f"{e['method']}: largest attributions")
              for e in explanations]
    features: list[str] = list(explanations[0]["attributions"]) if explanations else []
    scale = max((abs(v) for e in explanations for v in e["attributions"].values()),
                default=0.0)
    heat = [{"feature": f, "cells": [dict(zip(("value", "colour", "ink"), (
        e["attributions"][f], *_heat(e["attributions"][f], scale)), strict=True))
        for e in explanations]} for f in features]
    receipt = report.get("receipt")
    return {"r": report, "charts": charts, "heat": heat,
            "methods": [e["method"] for e in explanations],
            "quality_chart": quality_chart(report["quality"]) if "quality" in report
            else None,
            "receipt_lines": receipt_lines(receipt) if receipt else [],
            "receipt_width": RECEIPT_WIDTH,
            "receipt_sha256": hashlib.sha256(_receipt_text(receipt).encode()).hexdigest()
            if receipt else None}


def _receipt_text(receipt: Mapping[str, Any]) -> str:
    """The receipt as one line of JSON with no whitespace at all: ASCII only, and the
    spaces inside its strings written ``\\u0020`` (every space of compact JSON is inside a
    string, and ``json.dumps`` never leaves a lone backslash before one)."""
    text = json.dumps(dict(receipt), ensure_ascii=True, separators=(",", ":"))
    return text.replace(" ", "\\u0020")


def receipt_lines(receipt: Mapping[str, Any], width: int = RECEIPT_WIDTH) -> list[str]:
    """A receipt as printable lines that survive copying from a PDF: the BEGIN line, the
    receipt's JSON (``Receipt.to_dict`` form; no whitespace, ASCII) cut into lines of
    ``width`` characters, and the END line. Joining the lines between BEGIN and END with
    every whitespace character removed gives back JSON that ``xai-sandbox audit
    check-receipt`` reads."""
    text = _receipt_text(receipt)
    return [RECEIPT_BEGIN, *(text[i:i + width] for i in range(0, len(text), width)),
            RECEIPT_END]


def render_html(report: Mapping[str, Any]) -> str:
    """The full report as one self-contained HTML page."""
    return environment().get_template("report.html").render(**report_context(report))


def render_pdf(report: Mapping[str, Any]) -> bytes:
    """The full report as PDF, from the same HTML."""
    return render_pdf_html(render_html(report))


def render_pdf_html(html: str) -> bytes:
    """Any self-contained report page as PDF (WeasyPrint), after :func:`check_glyphs`."""
    import weasyprint

    check_glyphs(html)
    pdf: bytes = weasyprint.HTML(string=html).write_pdf()
    return pdf


# ---------------------------------------------------------------------- fonts
_FONT_FAMILY = re.compile(r"font-family\s*:\s*([^;}]+)", re.IGNORECASE)
_NOT_DRAWN = frozenset({"Cc", "Cf", "Zl", "Zp"})    # controls, format characters, breaks
_SKIPPED_TAGS = frozenset({"head", "title", "style", "script", "template"})


def font_stacks(html: str) -> list[list[str]]:
    """The families of every ``font-family`` declaration in the page's CSS, in order."""
    return [[f.strip().strip("'\"").strip() for f in decl.split(",") if f.strip()]
            for decl in _FONT_FAMILY.findall(html)]


class _Text(html.parser.HTMLParser):
    """The characters a page draws: the text of its body (not the head, styles or
    scripts), entities resolved."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chars: set[str] = set()
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in _SKIPPED_TAGS:
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.chars.update(data)


def _drawn(ch: str) -> bool:
    """Whether a character needs a glyph (not whitespace, a control, a format character
    or a variation selector)."""
    cp = ord(ch)
    return not (ch.isspace() or unicodedata.category(ch) in _NOT_DRAWN
                or 0xFE00 <= cp <= 0xFE0F or 0xE0100 <= cp <= 0xE01EF)


@functools.lru_cache(maxsize=64)
def _font_file(family: str) -> tuple[str, int, bool] | None:
    """The font file fontconfig picks for ``family``, the face's index in a collection, and
    whether it is that family (not a substitute for one that is not installed)."""
    fc_match = shutil.which("fc-match")
    if fc_match is None:
        raise RenderError("fonts", "fontconfig's fc-match must be installed (Debian: "
                          "fontconfig) to check the PDF's fonts", "no fc-match on PATH")
    pattern = re.sub(r"([\\:,=-])", r"\\\1", family)
    found = subprocess.run([fc_match, "-f", "%{file}\n%{index}\n%{family}", pattern],
                           capture_output=True, text=True, timeout=30, check=False)
    path, index, names = ([*found.stdout.split("\n", 2), "", ""])[:3]
    if found.returncode != 0 or not path:
        return None
    exact = family.casefold() in {n.strip().casefold() for n in names.split(",")}
    generic = family in ("serif", "sans-serif", "monospace", "cursive", "fantasy")
    return path, int(index) if index.strip().isdigit() else 0, exact or generic


@functools.lru_cache(maxsize=32)
def _cmap(path: str, index: int) -> frozenset[int]:
    """The code points a font file's cmap maps (empty when fontTools cannot read it)."""
    # fontTools ships no type information (pyproject's override list does not name it yet).
    from fontTools.ttLib import TTFont, TTLibError  # type: ignore[import-untyped]

    try:
        with TTFont(path, fontNumber=index, lazy=True) as font:
            return frozenset(font.getBestCmap() or ())
    except (OSError, TTLibError, AssertionError):
        return frozenset()


def check_glyphs(html: str) -> None:
    """Raise :class:`~xai_sandbox.errors.RenderError` unless every character the page
    draws is in the cmap of a font of its CSS font stacks.

    Fonts are resolved with ``fc-match`` and their cmaps read with fontTools, both cached
    for the process. The message names the missing characters (``U+XXXX`` and the
    character) and each family tried with the file fontconfig gave for it.
    """
    parser = _Text()
    parser.feed(html)
    parser.close()
    needed = {ch for ch in parser.chars if _drawn(ch)}
    families = list(dict.fromkeys(f for stack in font_stacks(html) for f in stack))
    files = {f: _font_file(f) for f in families}
    covered: set[int] = set()
    for found in dict.fromkeys(v[:2] for v in files.values() if v is not None):
        covered |= _cmap(*found)
    missing = sorted(ch for ch in needed if ord(ch) not in covered)
    if missing:
        shown = ", ".join(f"U+{ord(ch):04X} {ch!r}" for ch in missing[:20])
        more = f" and {len(missing) - 20} more" if len(missing) > 20 else ""
        tried = "; ".join(
            f"{f} -> " + ("no font" if v is None else v[0] if v[2] else
                          f"not installed (fontconfig substitutes {v[0]})")
            for f, v in files.items())
        raise RenderError("html", f"every character must be in a font of the page's CSS "
                          f"font stacks, or the PDF shows an empty box (install a font "
                          f"that has it; Chinese: Debian fonts-wqy-microhei); tried: "
                          f"{tried or 'no font-family declared'}",
                          f"{len(missing)} missing: {shown}{more}")
