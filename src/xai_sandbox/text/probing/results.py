"""Probe results and reports, and the checks of the probes' arguments."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from xai_sandbox.errors import InvalidInputError

__all__ = ["DEFAULT_CS", "Pool", "ProbeReport", "ProbeResult"]


Pool = Literal["auto", "cls", "last", "mean"]
POOLS = ("auto", "cls", "last", "mean")

# Inverse regularisation strengths tried by the cross-validation (log-spaced).
DEFAULT_CS: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)

# Function words skipped when looking for a document's first content word.
STOPWORDS = frozenset({
    "a", "an", "the", "and", "or", "but", "nor", "so", "yet", "if", "then", "than", "as", "of",
    "to", "in", "on", "at", "by", "for", "with", "from", "into", "onto", "about", "over", "under",
    "after", "before", "between", "through", "is", "am", "are", "was", "were", "be", "been",
    "being", "do", "does", "did", "have", "has", "had", "i", "me", "my", "we", "us", "our", "you",
    "your", "he", "him", "his", "she", "her", "it", "its", "they", "them", "their", "this",
    "that", "these", "those", "there", "here", "not", "no", "very", "quite", "just", "too",
    "also"
})
WORD = re.compile(r"[^\W\d_]+")

# Bootstrap replicates are computed in chunks of about this many cells (replicates x rows).
CHUNK_CELLS = 2_000_000


# ---------------------------------------------------------------------------- results
@dataclass(frozen=True, eq=False)
class ProbeResult:
    """One probe fitted on one representation (one layer) and scored on the test part.

    Attributes
    ----------
    accuracy, accuracy_ci:
        Test accuracy and its percentile bootstrap interval.
    auroc, auroc_ci:
        Test AUROC of the decision function and its interval (two classes only, and only
        when the test part holds both classes; ``None`` otherwise).
    majority_accuracy:
        Test accuracy of always answering the training part's commonest class.
    C:
        The inverse L2 strength chosen by cross-validation on the training part.
    direction, intercept:
        The probe in the units of the *raw* (unstandardised) features: ``(1, d)`` for two
        classes (positive = ``classes[1]``), ``(k, d)`` for ``k`` classes; the score of a
        row ``x`` is ``direction @ x + intercept``. Standardisation divides each coordinate
        by its total standard deviation, which the label signal itself inflates, so under
        strong regularisation a coordinate that carries much of the signal is shrunk
        relative to the others (by about ``1 / (1 + signal_j**2)``).
    classes:
        The class labels, sorted.
    train_index, test_index:
        The rows of each part.
    converged:
        ``False`` if the solver stopped at its iteration limit in any fit.
    """

    accuracy: float
    accuracy_ci: tuple[float, float]
    auroc: float | None
    auroc_ci: tuple[float, float] | None
    majority_accuracy: float
    C: float
    direction: np.ndarray
    intercept: np.ndarray
    classes: tuple[Any, ...]
    train_index: np.ndarray
    test_index: np.ndarray
    converged: bool

    @property
    def n_train(self) -> int:
        return int(self.train_index.size)

    @property
    def n_test(self) -> int:
        return int(self.test_index.size)

    def to_dict(self, *, include_direction: bool = False) -> dict[str, Any]:
        """A JSON-safe dictionary of the scores (and the probe direction if asked)."""
        out: dict[str, Any] = {
            "accuracy": self.accuracy, "accuracy_ci": list(self.accuracy_ci),
            "auroc": self.auroc,
            "auroc_ci": list(self.auroc_ci) if self.auroc_ci is not None else None,
            "majority_accuracy": self.majority_accuracy, "C": self.C,
            "n_train": self.n_train, "n_test": self.n_test, "converged": self.converged,
        }
        if include_direction:
            out["direction"] = self.direction.astype(float).tolist()
            out["intercept"] = self.intercept.astype(float).tolist()
        return out


@dataclass(frozen=True, eq=False)
class ProbeReport:
    """Per-layer probes of one model with their controls.

    Layer ``0`` is the embedding output, layer ``l`` the output of block ``l``.

    Attributes
    ----------
    task:
        The probe of the task labels at each layer.
    random_init:
        The same probe on the same layers of a randomly initialised copy of the model
        (``None`` without controls).
    control:
        The probe of the control-task labels at each layer (``None`` without controls).
    majority_accuracy:
        Test accuracy of always answering the training part's commonest class.
    pool:
        How each text became one vector (``"cls"``, ``"last"`` or ``"mean"``).
    train_index, test_index:
        The rows of each part; no document is in both.
    parameters:
        The settings of the run (JSON-safe).
    """

    task: tuple[ProbeResult, ...]
    random_init: tuple[ProbeResult, ...] | None
    control: tuple[ProbeResult, ...] | None
    majority_accuracy: float
    pool: str
    classes: tuple[Any, ...]
    train_index: np.ndarray
    test_index: np.ndarray
    n_documents_train: int
    n_documents_test: int
    parameters: dict[str, Any] = field(default_factory=dict)
    wall_time_s: float = 0.0

    @property
    def n_layers(self) -> int:
        """Number of probed representations (blocks + 1 for the embeddings)."""
        return len(self.task)

    @property
    def layer_names(self) -> tuple[str, ...]:
        return ("embeddings", *(f"layer {i}" for i in range(1, self.n_layers)))

    @property
    def accuracies(self) -> np.ndarray:
        """Task accuracy per layer, ``(n_layers,)``."""
        return np.array([r.accuracy for r in self.task])

    @property
    def random_init_accuracies(self) -> np.ndarray | None:
        if self.random_init is None:
            return None
        return np.array([r.accuracy for r in self.random_init])

    @property
    def control_accuracies(self) -> np.ndarray | None:
        if self.control is None:
            return None
        return np.array([r.accuracy for r in self.control])

    @property
    def selectivity(self) -> np.ndarray | None:
        """Task accuracy minus control-task accuracy per layer (``None`` without controls)."""
        control = self.control_accuracies
        return None if control is None else self.accuracies - control

    @property
    def best_layer(self) -> int:
        """The layer with the highest task accuracy (the earliest one on ties)."""
        return int(np.argmax(self.accuracies))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dictionary: per-layer scores of the task and every control."""

        def rows(results: tuple[ProbeResult, ...] | None) -> list[dict[str, Any]] | None:
            return None if results is None else [r.to_dict() for r in results]

        selectivity = self.selectivity
        return {
            "layers": list(self.layer_names), "pool": self.pool,
            "classes": [plain(c) for c in self.classes],
            "n_train": int(self.train_index.size), "n_test": int(self.test_index.size),
            "n_documents_train": self.n_documents_train,
            "n_documents_test": self.n_documents_test,
            "majority_accuracy": self.majority_accuracy, "best_layer": self.best_layer,
            "task": rows(self.task), "random_init": rows(self.random_init),
            "control": rows(self.control),
            "selectivity": None if selectivity is None else selectivity.tolist(),
            "parameters": dict(self.parameters), "wall_time_s": self.wall_time_s,
        }


def plain(value: Any) -> Any:
    """A numpy scalar as the Python value JSON knows."""
    return value.item() if isinstance(value, np.generic) else value


# ---------------------------------------------------------------------------- validation
def check_labels(labels: Any, n: int, parameter: str = "labels") -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or y.shape[0] != n:
        raise InvalidInputError(parameter, f"must be one label per row ({n} rows)",
                                f"shape {y.shape}")
    if y.dtype.kind == "f" and (not np.all(np.isfinite(y)) or np.any(y != np.round(y))):
        raise InvalidInputError(parameter, "must be class labels (integers, booleans or "
                                "strings), not continuous values", y[:5].tolist())
    if y.dtype.kind not in "biufUSO":
        raise InvalidInputError(parameter, "must be class labels (integers, booleans or "
                                "strings)", str(y.dtype))
    classes = np.unique(y)
    if classes.size < 2:
        raise InvalidInputError(parameter, "must hold at least two classes",
                                [plain(c) for c in classes])
    return y


def check_groups(groups: Any, n: int) -> np.ndarray | None:
    if groups is None:
        return None
    g = np.asarray(groups)
    if g.ndim != 1 or g.shape[0] != n:
        raise InvalidInputError("groups", f"must be one document id per row ({n} rows)",
                                f"shape {g.shape}")
    if np.unique(g).size < 2:
        raise InvalidInputError("groups", "must name at least two documents",
                                np.unique(g).size)
    return g


def check_cs(cs: Any) -> tuple[float, ...]:
    values = tuple(sorted(float(c) for c in np.atleast_1d(np.asarray(cs, dtype=float))))
    if not values or not all(np.isfinite(c) and c > 0 for c in values):
        raise InvalidInputError("cs", "must be positive finite regularisation strengths",
                                list(values))
    return values
