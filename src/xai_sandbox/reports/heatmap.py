"""PNG overlays of pixel attributions and class-activation maps, with a colour bar."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xai_sandbox.errors import InvalidInputError
from xai_sandbox.explainers.explanation import Explanation

__all__ = ["attribution_map", "save_overlay"]


def attribution_map(explanation: Explanation, row: int = 0) -> np.ndarray:
    """One (H, W) map per image: CAM values as they are, pixel attributions summed over
    channels (signed)."""
    values = explanation.values
    if values.ndim != 4:
        raise InvalidInputError("explanation", "must hold image values (n, c, h, w)",
                                values.shape)
    return np.asarray(values[row].sum(axis=0), dtype=np.float64)


def save_overlay(pixels: np.ndarray, explanation: Explanation, path: str | Path, *,
                 title: str, row: int = 0) -> Path:
    """Draw the photo, the attribution map over it, and a colour bar; write a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heat = attribution_map(explanation, row)
    signed = bool((heat < 0).any())
    if signed:
        # Signed pixel attributions: smooth over 5x5 patches so structure is visible.
        from scipy.ndimage import uniform_filter

        heat = uniform_filter(heat, size=5)
        limit = float(np.percentile(np.abs(heat), 99.5)) or 1.0
        cmap, vmin, vmax = "bwr", -limit, limit
    else:
        cmap, vmin, vmax = "jet", 0.0, float(heat.max()) or 1.0
    fig, ax = plt.subplots(figsize=(5.2, 4.4), dpi=100)
    try:                                     # the figure is closed even when drawing fails
        ax.imshow(pixels)
        shown = ax.imshow(heat, cmap=cmap, vmin=vmin, vmax=vmax, alpha=0.5)
        ax.set_axis_off()
        ax.set_title(title, fontsize=9)
        bar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
        bar.set_label("attribution (signed)" if signed else "class activation")
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, bbox_inches="tight")
    finally:
        plt.close(fig)
    return out
