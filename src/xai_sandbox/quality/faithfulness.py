"""Faithfulness: does the explanation point at what the model actually uses?

*Players* are the units an explanation ranks and a curve removes: the features of a
tabular row (a one-hot group counts as one feature), or square patches or superpixels of an
image. The **deletion curve** replaces the highest-ranked players with the baseline one
step at a time and follows the explained output down; the **insertion curve** starts from
the baseline and puts the highest-ranked players back (Petsiuk et al. 2018, RISE). Both are
normalised so that the input scores 1 and the baseline 0, over the fraction of players
moved. A faithful explanation makes deletion fall fast (small area) and insertion rise fast
(large area); their difference, the *gap*, is 0 in expectation for a random ranking, on any
model, because insertion of the top k is deletion of the other n - k.

**Infidelity** (Yeh et al. 2019) goes through Captum's ``infidelity`` over the players:
random subsets of players are moved to the baseline and the attribution's sum over the
subset is compared with the output's change (attributions rescaled by the best factor,
Captum's ``normalize=True``, so the scale of a heatmap does not matter).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from xai_sandbox.errors import InvalidInputError, UnsupportedModelError
from xai_sandbox.explainers.explanation import Explanation
from xai_sandbox.models.adapters import ModelAdapter
from xai_sandbox.models.schema import FeatureSchema

__all__ = ["Curves", "Players", "curves", "explained_output_fn", "infidelity", "players_of",
           "superpixels"]


@dataclass(frozen=True)
class Players:
    """The units a curve moves. ``owner`` maps each position of the flattened sample to
    its player (-1: no player, never moved); ``scores`` holds one score per player."""

    owner: np.ndarray
    scores: np.ndarray
    names: tuple[str, ...] | None = None
    kind: str = "features"

    @property
    def n(self) -> int:
        return int(self.scores.shape[0])

    def order(self) -> np.ndarray:
        """Players by decreasing score (the explanation's ranking), ties in index order."""
        return np.argsort(-self.scores, kind="stable")

    def masks(self, order: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Boolean ``(len(counts), positions)``: row i marks the first ``counts[i]``
        players of ``order``."""
        rank = np.empty(self.n + 1, dtype=np.int64)
        rank[order] = np.arange(self.n)
        rank[self.n] = self.n                      # positions with no player: never moved
        position_rank = rank[np.where(self.owner < 0, self.n, self.owner)]
        return position_rank[None, :] < np.asarray(counts)[:, None]


def players_of(explanation: Explanation, sample_shape: tuple[int, ...], *, row: int = 0,
               schema: FeatureSchema | None = None, patch: int = 1,
               segments: np.ndarray | None = None) -> Players:
    """The players of one explained row.

    Tabular values are per column or, with the schema's feature names, per feature (its
    one-hot columns move together). Image values ``(C, H, W)`` or ``(1, H, W)`` are summed
    over channels: each pixel is a player (``patch=1``), or each ``patch`` x ``patch``
    square, or each labelled region of ``segments`` (an ``(H, W)`` integer map, superpixels
    for instance), scored by the mean over its pixels.
    """
    if not 0 <= row < explanation.n_rows:
        raise InvalidInputError("row", f"must be in [0, {explanation.n_rows})", row)
    values = np.array(explanation.values[row], dtype=np.float64)   # a writable copy
    size = int(np.prod(sample_shape))
    if len(sample_shape) == 1:
        names = explanation.feature_names
        if values.shape == sample_shape:
            return Players(np.arange(size), values, names, "columns")
        if schema is not None and names == schema.names:
            owner = np.full(size, -1, dtype=np.int64)
            for g, cols in enumerate(schema.groups):
                owner[list(cols)] = g
            return Players(owner, values, names, "features")
        raise InvalidInputError(
            "explanation", f"needs one value per column ({size}) or per feature of the "
            "schema", values.shape)
    if len(sample_shape) != 3:
        raise UnsupportedModelError("explanation", "curves support tabular rows and "
                                    "(C, H, W) images", sample_shape)
    channels, height, width = sample_shape
    if values.ndim != 3 or values.shape[1:] != (height, width):
        raise InvalidInputError("explanation", f"needs an image map of size "
                                f"{height}x{width}", values.shape)
    heat = values.sum(axis=0)
    if segments is not None:
        labels = np.asarray(segments)
        if labels.shape != (height, width) or labels.dtype.kind not in "iu":
            raise InvalidInputError("segments", f"must be an integer ({height}, {width}) map",
                                    labels.shape)
        kind = "superpixels"
    else:
        if not isinstance(patch, int) or isinstance(patch, bool) or not 1 <= patch <= min(
                height, width):
            raise InvalidInputError("patch", f"must be an integer in [1, {min(height, width)}]",
                                    patch)
        rows_, cols_ = np.indices((height, width))
        labels = (rows_ // patch) * -(-width // patch) + cols_ // patch
        kind = "pixels" if patch == 1 else f"patches {patch}x{patch}"
    _, flat = np.unique(labels.ravel(), return_inverse=True)
    n = int(flat.max()) + 1
    scores = np.bincount(flat, weights=heat.ravel(), minlength=n) / np.bincount(
        flat, minlength=n)
    return Players(np.tile(flat, channels), scores, None, kind)


def superpixels(pixels: np.ndarray, n_segments: int = 100, compactness: float = 10.0
                ) -> np.ndarray:
    """SLIC superpixels (scikit-image, the ``images`` extra) of an ``(H, W, 3)`` image: an
    ``(H, W)`` label map for :func:`players_of`'s ``segments``."""
    try:
        from skimage.segmentation import slic
    except ImportError as exc:
        raise InvalidInputError("extras", "superpixels need `pip install "
                                "'xai-sandbox[images]'`", "scikit-image") from exc
    image = np.asarray(pixels)
    if image.ndim != 3 or image.shape[2] != 3:
        raise InvalidInputError("pixels", "must be an (H, W, 3) image", image.shape)
    if not isinstance(n_segments, int) or isinstance(n_segments, bool) or n_segments < 2:
        raise InvalidInputError("n_segments", "must be an integer of at least 2", n_segments)
    labels: np.ndarray = slic(image, n_segments=n_segments, compactness=compactness,
                              start_label=0)
    return labels.astype(np.int64)


def explained_output_fn(adapter: ModelAdapter, explanation: Explanation, row: int = 0
                        ) -> Callable[[np.ndarray], np.ndarray]:
    """The explained number of ``row`` as a function of inputs, in the explanation's
    output space (logit, probability, a tree ensemble's margin, or a contrast)."""
    target = int(explanation.target[row])
    space = explanation.output_space
    if space == "margin":
        margin = getattr(adapter, "predict_margin", None)
        if margin is None:
            raise UnsupportedModelError("explanation", "is in margin space but the model has "
                                        "no margin", type(adapter).__name__)

        def from_margin(X: np.ndarray) -> np.ndarray:
            m = margin(X)
            if m.shape[1] == 1 and explanation.prediction.shape[1] == 2:
                return np.asarray(m[:, 0] if target == 1 else -m[:, 0])  # binary booster
            return np.asarray(m[:, target])
        return from_margin
    if space == "contrast":
        foil = explanation.parameters.get("foil")
        if not isinstance(foil, int):
            raise InvalidInputError("explanation.parameters.foil", "a contrast needs its foil "
                                    "class", foil)
        return lambda X: adapter.predict(X)[:, target] - adapter.predict(X)[:, foil]
    if space != adapter.output_space:
        raise UnsupportedModelError("explanation", f"explains {space!r} outputs but the model "
                                    f"gives {adapter.output_space!r}", space)
    return lambda X: adapter.predict(X)[:, target]


@dataclass(frozen=True)
class Curves:
    """Deletion and insertion curves of one explained row, normalised to [input 1,
    baseline 0], over the fraction of players moved (0 and 1 included)."""

    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray
    output: float            # f(input)
    baseline_output: float   # f(baseline)
    players: int
    kind: str

    @property
    def defined(self) -> bool:
        """Whether the input and the baseline differ enough for the curves to mean much:
        by more than rounding, and by at least a tenth of the curves' largest excursion
        (else the normalised curves are mostly the division by a near-zero gap)."""
        span = abs(self.output - self.baseline_output)
        if span <= 1e-6 * max(1.0, abs(self.output)):
            return False
        # Curves are normalised by the span: an excursion of 10 spans is 10.
        excursion = float(max(np.abs(self.deletion).max(), np.abs(self.insertion).max()))
        return excursion <= 10.0

    @property
    def deletion_area(self) -> float:
        return float(np.trapezoid(self.deletion, self.fractions))

    @property
    def insertion_area(self) -> float:
        return float(np.trapezoid(self.insertion, self.fractions))

    @property
    def gap(self) -> float:
        """Insertion area minus deletion area: 0 in expectation for a random ranking."""
        return self.insertion_area - self.deletion_area

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe; areas and gap are ``None`` where the curves are not defined (the
        baseline scores what the input scores, so nothing can be normalised)."""
        defined = self.defined
        return {"fractions": self.fractions.tolist(),
                "deletion": self.deletion.tolist() if defined else None,
                "insertion": self.insertion.tolist() if defined else None,
                "deletion_area": self.deletion_area if defined else None,
                "insertion_area": self.insertion_area if defined else None,
                "gap": self.gap if defined else None,
                "output": self.output, "baseline_output": self.baseline_output,
                "defined": defined, "players": self.players, "kind": self.kind}


def _fractions(n_players: int, fractions: Any) -> np.ndarray:
    if fractions is None:
        return np.arange(n_players + 1) / max(n_players, 1)
    inner = np.asarray(fractions, dtype=np.float64).ravel()
    if inner.size == 0 or not np.isfinite(inner).all() or (inner <= 0).any() or (
            inner >= 1).any():
        raise InvalidInputError("fractions", "must be numbers strictly between 0 and 1",
                                fractions)
    grid = np.unique(np.concatenate([[0.0], inner, 1.0 - inner, [1.0]]))
    return grid


def curves(output_fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray,
           baseline: np.ndarray, players: Players, *, fractions: Any = None,
           order: np.ndarray | None = None, output: float | None = None,
           baseline_output: float | None = None) -> Curves:
    """Deletion and insertion curves of one sample ``x`` (no batch axis).

    ``fractions``: the interior points (mirrored so that the grid is symmetric, which keeps
    a random ranking's gap at 0); ``None`` moves the players one at a time. ``order``
    overrides the explanation's ranking (a random ranking, say). All perturbed inputs go to
    the model in one batch; ``output`` and ``baseline_output``, when known, save their rows.
    """
    x = np.asarray(x)
    baseline = np.broadcast_to(np.asarray(baseline, dtype=x.dtype), x.shape)
    grid = _fractions(players.n, fractions)
    counts = np.rint(grid * players.n).astype(np.int64)
    ranking = players.order() if order is None else np.asarray(order)
    if ranking.shape != (players.n,) or not np.array_equal(np.sort(ranking),
                                                          np.arange(players.n)):
        raise InvalidInputError("order", f"must be a permutation of the {players.n} players",
                                ranking.shape)
    flat_x, flat_b = x.ravel(), baseline.ravel()
    masks = players.masks(ranking, counts)                # row i: top counts[i] players
    interior = (counts > 0) & (counts < players.n)
    deleted = np.where(masks[interior], flat_b, flat_x)   # top-k replaced by the baseline
    inserted = np.where(masks[interior], flat_x, flat_b)  # top-k put back onto the baseline
    extra = [r for r, known in ((flat_x, output), (flat_b, baseline_output)) if known is None]
    batch = np.concatenate([deleted, inserted, *(r[None] for r in extra)]).reshape(
        -1, *x.shape).astype(x.dtype, copy=False)
    values = np.asarray(output_fn(batch), dtype=np.float64)
    m = int(interior.sum())
    tail = list(values[2 * m:])
    f_x = float(output) if output is not None else float(tail.pop(0))
    f_b = float(baseline_output) if baseline_output is not None else float(tail.pop(0))
    span = f_x - f_b if abs(f_x - f_b) > 0 else 1.0

    def curve(middle: np.ndarray, start: float, end: float) -> np.ndarray:
        out = np.empty(len(counts))
        out[counts == 0] = start
        out[counts >= players.n] = end
        out[interior] = middle
        return (out - f_b) / span

    return Curves(fractions=grid, deletion=curve(values[:m], f_x, f_b),
                  insertion=curve(values[m:2 * m], f_b, f_x), output=f_x,
                  baseline_output=f_b, players=players.n, kind=players.kind)


def infidelity(output_fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray,
               baseline: np.ndarray, players: Players, *, n_perturb: int = 64,
               keep: float = 0.7, random_state: int = 0) -> float:
    """Captum's normalised infidelity over random subsets of players moved to the baseline.

    ``keep`` is each player's chance of staying; ``random_state`` seeds the draws.
    """
    from captum.metrics import infidelity as captum_infidelity

    if not 0 < keep < 1:
        raise InvalidInputError("keep", "must be strictly between 0 and 1", keep)
    if not isinstance(n_perturb, int) or n_perturb < 2:
        raise InvalidInputError("n_perturb", "must be an integer of at least 2", n_perturb)
    flat_x = np.asarray(x, dtype=np.float64).ravel()
    flat_b = np.broadcast_to(np.asarray(baseline, dtype=np.float64), np.shape(x)).ravel()
    owner = np.where(players.owner < 0, players.n, players.owner)
    generator = torch.Generator().manual_seed(random_state)

    def forward(z: torch.Tensor) -> torch.Tensor:
        # z: (m, players) in [0, 1]; 1 keeps the player's input values, 0 the baseline's.
        kept = np.concatenate([z.detach().double().numpy(), np.ones((len(z), 1))], axis=1)
        share = kept[:, owner]              # positions with no player keep the input
        rows = flat_b + share * (flat_x - flat_b)
        out = output_fn(rows.reshape(-1, *np.shape(x)).astype(np.asarray(x).dtype))
        return torch.as_tensor(out, dtype=torch.float64)

    def perturb(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kept = (torch.rand(z.shape, generator=generator, dtype=torch.float64) < keep).double()
        return z - z * kept, z * kept       # (I = what was removed, the perturbed input)

    ones = torch.ones((1, players.n), dtype=torch.float64)
    scores = torch.as_tensor(players.scores[None], dtype=torch.float64)
    value = captum_infidelity(forward, perturb, ones, scores, n_perturb_samples=n_perturb,
                              normalize=True)
    return float(value[0])

