"""Bias heatmaps for images: where the model looked, weighted by what it is allowed to
look at.

The Grad-CAM++ map (or any image attribution) is multiplied by each anchor's risk inside
the anchor's boxes (regions with no anchor keep a small floor weight so they stay visible),
drawn over the photo with a colour bar, labelled anchor boxes, a caption saying whether any
anchor is at risk and a table of every anchor's risk against its threshold, and written as a
PNG fit to print. Caption, box labels and table come from one :class:`BiasLegend`
(:func:`bias_legend`), so they cannot disagree; the PNG carries the caption and the table
as text too (its ``Title`` and ``Description``). ``privacy`` blurs or blanks the regions of
protected anchors in the exported image, so the heatmap can be shared without the personal
detail underneath.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from xai_sandbox.errors import InvalidInputError
from xai_sandbox.explainers.explanation import Explanation
from xai_sandbox.reports.heatmap import attribution_map
from xai_sandbox.semantics.anchors import AnchorLibrary, AnchorMatch, region_mask

__all__ = ["AnchorRow", "BiasLegend", "bias_heatmap", "bias_legend", "privacy_filter",
           "risk_weighted_map"]

Privacy = Literal["none", "blur", "crop"]
_FLOOR = 0.1


def risk_weighted_map(explanation: Explanation, library: AnchorLibrary,
                      matches: Sequence[AnchorMatch], row: int = 0) -> np.ndarray:
    """The (H, W) attribution map times the risk of the anchor covering each pixel (the
    largest where boxes overlap; a floor of 0.1 where none does)."""
    heat = np.abs(attribution_map(explanation, row))
    h, w = heat.shape
    weight = np.full((h, w), _FLOOR)
    risk = {m.anchor: m.risk for m in matches}
    for anchor in library.anchors:
        if anchor.boxes or anchor.polygons:
            inside = region_mask(anchor, (h, w))
            weight[inside] = np.maximum(weight[inside], risk.get(anchor.id, 0.0))
    out: np.ndarray = heat * weight
    return out


@dataclass(frozen=True)
class AnchorRow:
    """One anchor of the heatmap's table: its share of the attribution, its risk, the
    threshold it is held to, and whether it is at risk (``risk >= threshold``)."""

    anchor: str
    label: str
    share: float
    risk: float
    threshold: float
    rule: str

    @property
    def at_risk(self) -> bool:
        return self.risk >= self.threshold

    def figures(self) -> tuple[str, str]:
        """Risk and threshold as text, with as many decimals as it takes (up to 6) for a
        risk below its threshold never to print as equal to it."""
        for places in range(2, 7):
            risk, threshold = f"{self.risk:.{places}f}", f"{self.threshold:.{places}f}"
            if risk != threshold or self.at_risk:
                break
        return risk, threshold

    def verdict(self) -> str:
        """``risk 0.72 < 0.85`` or ``risk 0.92 >= 0.85``."""
        risk, threshold = self.figures()
        return f"risk {risk} {'>=' if self.at_risk else '<'} {threshold}"


@dataclass(frozen=True)
class BiasLegend:
    """The caption and the anchor table of one bias heatmap, from one list of matches."""

    rows: tuple[AnchorRow, ...]

    @property
    def at_risk(self) -> tuple[AnchorRow, ...]:
        return tuple(r for r in self.rows if r.at_risk)

    @property
    def title(self) -> str:
        """Whether any anchor is at risk, and which, by what rule."""
        hits = self.at_risk
        if not hits:
            return (f"No anchor at risk: every anchor's risk is below its threshold "
                    f"({len(self.rows)} anchors)")
        return f"{len(hits)} of {len(self.rows)} anchors at risk: " + "; ".join(
            f"{r.label} ({r.verdict()}; rule: {r.rule})" for r in hits)

    def table(self) -> list[list[str]]:
        """The table's rows: anchor, share of attribution, risk, threshold, at risk."""
        return [[r.label, f"{r.share:.0%}", *r.figures(), "yes" if r.at_risk else "no"]
                for r in self.rows]

    def text(self) -> str:
        """The table as tab-separated lines, with its header."""
        head = ["anchor", "share of attribution", "risk", "threshold", "at risk"]
        return "\n".join("\t".join(cells) for cells in [head, *self.table()])


def bias_legend(library: AnchorLibrary, matches: Sequence[AnchorMatch]) -> BiasLegend:
    """The legend of a heatmap: one row per match, in the order given, each held to its
    anchor's threshold in ``library`` (a match's own ``hit`` flag is not used, so a stale
    flag cannot contradict the table)."""
    anchors = {a.id: a for a in library.anchors}
    unknown = sorted({m.anchor for m in matches} - set(anchors))
    if unknown:
        raise InvalidInputError("matches", f"must name anchors of library "
                                f"{library.version!r}", unknown)
    return BiasLegend(tuple(
        AnchorRow(anchor=m.anchor, label=m.label["en"], share=m.sensitivity, risk=m.risk,
                  threshold=anchors[m.anchor].threshold, rule=m.rule) for m in matches))


def privacy_filter(pixels: np.ndarray, library: AnchorLibrary, mode: Privacy = "blur"
                   ) -> np.ndarray:
    """A copy of ``pixels`` (H, W, 3) with every protected anchor's boxes blurred
    (a strong Gaussian) or blanked to grey (``crop``)."""
    if mode not in ("none", "blur", "crop"):
        raise InvalidInputError("privacy", "must be 'none', 'blur' or 'crop'", mode)
    image = np.array(pixels, dtype=np.float64, copy=True)
    if image.ndim != 3 or image.shape[2] != 3:
        raise InvalidInputError("pixels", "must be an (H, W, 3) image", image.shape)
    if mode == "none":
        return image
    from scipy.ndimage import gaussian_filter

    h, w = image.shape[:2]
    blurred = gaussian_filter(image, sigma=(8, 8, 0)) if mode == "blur" else None
    grey = image.max() / 2
    for anchor in library.anchors:
        if not anchor.protected or not (anchor.boxes or anchor.polygons):
            continue
        inside = region_mask(anchor, (h, w))
        image[inside] = grey if blurred is None else blurred[inside]
    return image


def bias_heatmap(pixels: np.ndarray, explanation: Explanation, library: AnchorLibrary,
                 matches: Sequence[AnchorMatch], path: str | Path, *,
                 privacy: Privacy = "none", title: str = "", row: int = 0) -> Path:
    """Write the risk-weighted heatmap over the (optionally privacy-filtered) photo, with
    the caption and anchor table of :func:`bias_legend` (also in the PNG's ``Title`` and
    ``Description`` text)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Polygon, Rectangle

    legend = bias_legend(library, matches)
    image = privacy_filter(pixels, library, privacy)
    if image.max() > 1.0:
        image = image / 255.0
    heat = risk_weighted_map(explanation, library, matches, row)
    by_id = {r.anchor: r for r in legend.rows}
    table = legend.table()
    fig, (ax, below) = plt.subplots(
        2, 1, figsize=(6.0, 5.4 + 0.2 * (len(table) + 1)), dpi=150,
        gridspec_kw={"height_ratios": [5.4, 0.2 * (len(table) + 1)]})
    try:
        ax.imshow(np.clip(image, 0, 1))
        shown = ax.imshow(heat, cmap="inferno", alpha=0.55, vmin=0.0,
                          vmax=float(heat.max()) or 1.0)
        for anchor in library.anchors:
            r = by_id.get(anchor.id)
            colour = "red" if r is not None and r.at_risk else "white"
            text = anchor.label["en"] + (f": {r.share:.0%} of attribution, {r.verdict()}"
                                         if r is not None else "")
            outlines = [Rectangle((x0, y0), x1 - x0, y1 - y0) for x0, y0, x1, y1 in
                        anchor.boxes] + [Polygon(list(p)) for p in anchor.polygons]
            for patch in outlines:
                patch.set(fill=False, edgecolor=colour, linewidth=1.5)
                ax.add_patch(patch)
                x0, y0 = patch.get_xy()[0] if isinstance(patch, Polygon) else patch.get_xy()
                ax.text(x0 + 2, min(y0 + 9, image.shape[0] - 2), text, color=colour, fontsize=6,
                        bbox={"facecolor": "black", "alpha": 0.5, "pad": 1})
        ax.set_axis_off()
        ax.set_title((title + "\n" if title else "") + legend.title, fontsize=7, wrap=True)
        bar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
        bar.set_label("attribution x anchor risk", fontsize=7)
        below.set_axis_off()
        if table:
            grid = below.table(cellText=table, loc="center", cellLoc="left",
                               colWidths=[0.46, 0.2, 0.1, 0.14, 0.1],
                               colLabels=["anchor", "share of attribution", "risk",
                                          "threshold", "at risk"])
            grid.auto_set_font_size(False)
            grid.set_fontsize(6)
            for i, r in enumerate(legend.rows, start=1):
                if r.at_risk:
                    for j in range(5):
                        grid[i, j].get_text().set(color="#b2182b", fontweight="bold")
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, bbox_inches="tight",
                    metadata={"Title": legend.title, "Description": legend.text()})
    finally:
        plt.close(fig)
    return out
