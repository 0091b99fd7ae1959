"""Bias heatmaps for images: where the model looked, weighted by what it is allowed to
look at.

The Grad-CAM++ map (or any image attribution) is multiplied by each anchor's risk inside
the anchor's boxes (regions with no anchor keep a small floor weight so they stay visible),
drawn over the photo with a colour bar, labelled anchor boxes and the risk rules in the
title, and written as a PNG fit to print. ``privacy`` blurs or blanks the regions of
protected anchors in the exported image, so the heatmap can be shared without the personal
detail underneath.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from xai_sandbox.errors import InvalidInputError
from xai_sandbox.explainers.explanation import Explanation
from xai_sandbox.reports.heatmap import attribution_map
from xai_sandbox.semantics.anchors import AnchorLibrary, AnchorMatch, region_mask

__all__ = ["bias_heatmap", "privacy_filter", "risk_weighted_map"]

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
    """Write the risk-weighted heatmap over the (optionally privacy-filtered) photo."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Polygon, Rectangle

    image = privacy_filter(pixels, library, privacy)
    if image.max() > 1.0:
        image = image / 255.0
    heat = risk_weighted_map(explanation, library, matches, row)
    by_id = {m.anchor: m for m in matches}
    hits = [m for m in matches if m.hit]
    rules = "; ".join(f"{m.label['en']}: {m.rule}" for m in hits) or "no anchor at risk"
    fig, ax = plt.subplots(figsize=(6.0, 5.4), dpi=150)
    try:
        ax.imshow(np.clip(image, 0, 1))
        shown = ax.imshow(heat, cmap="inferno", alpha=0.55, vmin=0.0,
                          vmax=float(heat.max()) or 1.0)
        for anchor in library.anchors:
            m = by_id.get(anchor.id)
            colour = "red" if m is not None and m.hit else "white"
            text = anchor.label["en"] + (f": {m.sensitivity:.0%} of attribution, risk "
                                         f"{m.risk:.2f}" if m is not None else "")
            outlines = [Rectangle((x0, y0), x1 - x0, y1 - y0) for x0, y0, x1, y1 in
                        anchor.boxes] + [Polygon(list(p)) for p in anchor.polygons]
            for patch in outlines:
                patch.set(fill=False, edgecolor=colour, linewidth=1.5)
                ax.add_patch(patch)
                x0, y0 = patch.get_xy()[0] if isinstance(patch, Polygon) else patch.get_xy()
                ax.text(x0 + 2, y0 + 9, text, color=colour, fontsize=6,
                        bbox={"facecolor": "black", "alpha": 0.5, "pad": 1})
        ax.set_axis_off()
        ax.set_title((title + "\n" if title else "") + f"Rule: {rules}", fontsize=7)
        bar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
        bar.set_label("attribution x anchor risk", fontsize=7)
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, bbox_inches="tight")
    finally:
        plt.close(fig)
    return out
