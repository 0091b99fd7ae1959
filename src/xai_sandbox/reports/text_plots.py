"""Plots of the text methods' results, as PNG bytes (computed once by ``xai_sandbox.text``,
drawn here): token heatmaps, attention grids, activation-patching maps and probe curves."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from xai_sandbox.errors import InvalidInputError
from xai_sandbox.text.attention import AttentionMaps, attention_stack
from xai_sandbox.text.patching import PatchingResult
from xai_sandbox.text.probing import ProbeReport

__all__ = ["attention_grid_png", "patching_map_png", "probe_curve_png", "token_heatmap_png"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    plt = _pyplot()
    try:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)
    return buf.getvalue()


def token_heatmap_png(tokens: Sequence[str], scores: Sequence[float] | np.ndarray,
                      title: str, *, line_chars: int = 70) -> bytes:
    """The tokens as text, each on a background coloured by its score, as PNG bytes.

    Non-negative scores (rollout, attention) use a white-to-red scale from 0 to the largest
    score; signed scores a blue-white-red scale symmetric about 0. Lines wrap after about
    ``line_chars`` characters.

    Parameters
    ----------
    tokens:
        The tokens, in order.
    scores:
        One finite score per token.
    title:
        Drawn above the tokens.
    line_chars:
        Characters per line before wrapping.
    """
    toks = [str(t) for t in tokens]
    values = np.asarray(scores, dtype=np.float64).ravel()
    if not toks or values.shape != (len(toks),):
        raise InvalidInputError("scores", f"needs one score per token ({len(toks)} tokens, "
                                "at least one)", values.shape)
    if not np.isfinite(values).all():
        raise InvalidInputError("scores", "must be finite (no NaN or infinity)",
                                "non-finite values")
    if isinstance(line_chars, bool) or not isinstance(line_chars, int) or line_chars < 10:
        raise InvalidInputError("line_chars", "must be an int of at least 10", line_chars)
    plt = _pyplot()
    from matplotlib.colors import Normalize

    signed = bool((values < 0).any())
    limit = float(np.abs(values).max()) or 1.0
    cmap = plt.get_cmap("RdBu_r" if signed else "Reds")
    norm = Normalize(-limit if signed else 0.0, limit)
    # Lay tokens out on lines of a monospace grid: x in characters, y in lines.
    placed: list[tuple[int, int, str, float]] = []
    column, line = 0, 0
    for tok, score in zip(toks, values.tolist(), strict=True):
        width = len(tok) + 1
        if column and column + width > line_chars:
            column, line = 0, line + 1
        placed.append((column, line, tok, float(score)))
        column += width
    n_lines = line + 1
    fig, ax = plt.subplots(figsize=(0.105 * line_chars + 1.2, 0.34 * n_lines + 0.9), dpi=110)
    for x, line, tok, value in placed:
        colour = cmap(norm(value))
        ax.text(x, -line, tok, family="monospace", fontsize=10, va="center", ha="left",
                bbox={"facecolor": colour, "edgecolor": "none", "pad": 1.5},
                color="white" if abs(norm(value) - (0.5 if signed else 0.0)) > 0.35 else
                "black")
    ax.set_xlim(-0.5, line_chars + 0.5)
    ax.set_ylim(-n_lines + 0.4, 0.6)
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    mappable = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(mappable, ax=ax, orientation="horizontal", fraction=0.25 / n_lines ** 0.5,
                 pad=0.02, aspect=40)
    return _png(fig)


def attention_grid_png(attention: AttentionMaps | np.ndarray | torch.Tensor, layer: int, *,
                       example: int = 0, heads: Sequence[int] | None = None,
                       tokens: Sequence[str] | None = None, title: str | None = None,
                       columns: int = 4) -> bytes:
    """The attention matrices of one layer's heads as a grid of heatmaps, as PNG bytes.

    Rows are query positions, columns key positions; the colour scale runs from 0 to the
    largest weight shown. A rollout matrix can be drawn too, as ``rollout(...)[None, None]``
    with ``layer=0``.

    Parameters
    ----------
    attention:
        :class:`AttentionMaps`, or one example's ``(n_layers, n_heads, T, T)`` array.
    layer:
        Which layer (negative counts from the last).
    example:
        Which example of ``AttentionMaps``.
    heads:
        Which heads (all by default).
    tokens:
        Axis labels (``AttentionMaps`` brings its own); shown for up to 40 tokens.
    title:
        Figure title (default: the layer).
    columns:
        Heads per row of the grid.
    """
    stack, _ = attention_stack(attention, example)
    n_layers, n_heads, length = stack.shape[0], stack.shape[1], stack.shape[-1]
    if isinstance(layer, bool) or not isinstance(layer, int) or not (
            -n_layers <= layer < n_layers):
        raise InvalidInputError("layer", f"must be an int in [{-n_layers}, {n_layers})", layer)
    chosen = list(range(n_heads)) if heads is None else list(heads)
    if not chosen or not all(isinstance(h, int) and not isinstance(h, bool)
                             and 0 <= h < n_heads for h in chosen):
        raise InvalidInputError("heads", f"must be a non-empty list of head indices in "
                                f"[0, {n_heads})", heads)
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise InvalidInputError("columns", "must be a positive int", columns)
    labels = (list(attention.tokens[example]) if isinstance(attention, AttentionMaps)
              else None if tokens is None else [str(t) for t in tokens])
    if labels is not None and len(labels) != length:
        raise InvalidInputError("tokens", f"needs one token per position ({length})",
                                len(labels))
    plt = _pyplot()
    cols = min(columns, len(chosen))
    rows = -(-len(chosen) // cols)
    side = 1.2 + 0.18 * min(length, 40)
    fig, axes = plt.subplots(rows, cols, figsize=(side * cols, side * rows + 0.5),
                             dpi=100, squeeze=False)
    for ax in axes.ravel()[len(chosen):]:
        ax.set_axis_off()
    top = float(stack[layer, chosen].max()) or 1.0     # one scale for all the heads shown
    image = None
    for ax, head in zip(axes.ravel(), chosen, strict=False):
        image = ax.imshow(stack[layer, head], cmap="viridis", vmin=0.0, vmax=top)
        ax.set_title(f"head {head}", fontsize=8)
        if labels is not None and length <= 40:
            ax.set_xticks(range(length), labels, rotation=90, fontsize=6)
            ax.set_yticks(range(length), labels, fontsize=6)
        else:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title if title is not None else f"layer {layer % n_layers}: attention "
                 "(rows: queries, columns: keys)", fontsize=9)
    fig.colorbar(image, ax=axes.ravel().tolist(), fraction=0.03, pad=0.02)
    return _png(fig)


def patching_map_png(result: PatchingResult, component: str = "resid_pre") -> bytes:
    """A heatmap of one component's map (layers down, tokens or heads across) as PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not isinstance(result, PatchingResult):
        raise InvalidInputError("result", "must be a PatchingResult", type(result).__name__)
    if component not in result.scores:
        raise InvalidInputError("component", f"must be one of the patched components "
                                f"{sorted(result.scores)}", component)
    data = result.scores[component]
    if data.ndim == 3:                       # head_by_pos: rows are (layer, head)
        data = data.reshape(-1, data.shape[-1])
    columns = list(result.tokens) if data.shape[1] == len(result.tokens) and \
        component != "head" else [f"H{h}" for h in range(data.shape[1])]
    rows = ([f"L{layer}" for layer in range(result.n_layers)] if component != "head_by_pos"
            else [f"L{layer}H{h}" for layer in range(result.n_layers)
                  for h in range(data.shape[0] // result.n_layers)])
    fig = Figure(figsize=(max(4.0, 0.5 * len(columns) + 2), max(2.5, 0.3 * len(rows) + 1.5)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    limit = max(1.0, float(np.nanmax(np.abs(data))) if data.size else 1.0)
    image = ax.imshow(data, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(len(columns)), columns, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_xlabel("head" if component == "head" else "token")
    ax.set_ylabel("layer, head" if component == "head_by_pos" else "layer")
    ax.set_title(f"{component} ({result.mode}): m_clean {result.m_clean:.2f}, "
                 f"m_corr {result.m_corr:.2f}", fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def probe_curve_png(report: ProbeReport) -> bytes:
    """Accuracy per layer (task with its interval, random-init model, control task,
    majority class) as PNG bytes, drawn with matplotlib's Agg canvas (no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not isinstance(report, ProbeReport):
        raise InvalidInputError("report", "must be a ProbeReport", type(report).__name__)
    layers = np.arange(report.n_layers)
    fig = Figure(figsize=(6.4, 3.6), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    low = [r.accuracy_ci[0] for r in report.task]
    high = [r.accuracy_ci[1] for r in report.task]
    ax.fill_between(layers, low, high, color="#b2182b", alpha=0.15, linewidth=0)
    ax.plot(layers, report.accuracies, "o-", color="#b2182b", label="task")
    if (random_acc := report.random_init_accuracies) is not None:
        ax.plot(layers, random_acc, "s--", color="#555555", label="random-init model")
    if (control_acc := report.control_accuracies) is not None:
        ax.plot(layers, control_acc, "^:", color="#2166ac", label="control task")
    ax.axhline(report.majority_accuracy, color="#999999", linewidth=1, label="majority class")
    ax.set_xticks(layers, [name.replace("layer ", "L") for name in report.layer_names],
                  fontsize=8)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("layer", fontsize=8)
    ax.set_ylabel("test accuracy", fontsize=8)
    ax.set_title(f"Linear probe per layer (pool: {report.pool})", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax.tick_params(labelsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
