"""Linear probes of hidden states, with the controls that make them mean something.

A probe asks whether a property of the input (a label per text) can be read off a layer's
hidden state by a linear classifier. High probe accuracy alone says little: a linear
classifier on a wide enough representation decodes many things, and a randomly initialised
network already carries a lot of information about its input. So every probe here comes
with its controls (Hewitt & Liang 2019; LLM.md section 2.3):

* **majority class**: the accuracy of always answering the training part's commonest label;
* **random-init model**: the same probe on the same layer of a freshly initialised copy of
  the model (same architecture): what the architecture gives without training;
* **control task**: labels that are a fixed random function of each document's first
  content word type, drawn from the task's label distribution. A probe that reaches high
  accuracy on it is memorising word identity; *selectivity* = task accuracy - control
  accuracy.

Train and test parts are split **by document** (``groups``), so that no document is on both
sides; the probe is an L2 logistic regression on features standardised with training-part
statistics, its ``C`` chosen by 5-fold cross-validation inside the training part (also by
document). Accuracy and, for two classes, AUROC come with percentile bootstrap intervals
over the test part (resampling documents, not rows, when documents are given).
"""

from __future__ import annotations

import copy
import hashlib
import io
import re
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, cast

import numpy as np
import torch

from xai_sandbox.errors import InvalidInputError, UnsupportedModelError
from xai_sandbox.explainers.explanation import Explanation
from xai_sandbox.text.model import TextModel, text_explanation

__all__ = [
    "DEFAULT_CS",
    "Pool",
    "ProbeReport",
    "ProbeResult",
    "control_task_labels",
    "document_split",
    "hidden_states",
    "probe",
    "probe_curve_png",
    "probe_explanation",
    "probe_layers",
    "randomly_initialised",
]

Pool = Literal["auto", "cls", "last", "mean"]
_POOLS = ("auto", "cls", "last", "mean")

# Inverse regularisation strengths tried by the cross-validation (log-spaced).
DEFAULT_CS: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)

# Function words skipped when looking for a document's first content word.
_STOPWORDS = frozenset({
    "a", "an", "the", "and", "or", "but", "nor", "so", "yet", "if", "then", "than", "as", "of",
    "to", "in", "on", "at", "by", "for", "with", "from", "into", "onto", "about", "over", "under",
    "after", "before", "between", "through", "is", "am", "are", "was", "were", "be", "been",
    "being", "do", "does", "did", "have", "has", "had", "i", "me", "my", "we", "us", "our", "you",
    "your", "he", "him", "his", "she", "her", "it", "its", "they", "them", "their", "this",
    "that", "these", "those", "there", "here", "not", "no", "very", "quite", "just", "too",
    "also"
})
_WORD = re.compile(r"[^\W\d_]+")

# Bootstrap replicates are computed in chunks of about this many cells (replicates x rows).
_CHUNK_CELLS = 2_000_000


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
            "classes": [_plain(c) for c in self.classes],
            "n_train": int(self.train_index.size), "n_test": int(self.test_index.size),
            "n_documents_train": self.n_documents_train,
            "n_documents_test": self.n_documents_test,
            "majority_accuracy": self.majority_accuracy, "best_layer": self.best_layer,
            "task": rows(self.task), "random_init": rows(self.random_init),
            "control": rows(self.control),
            "selectivity": None if selectivity is None else selectivity.tolist(),
            "parameters": dict(self.parameters), "wall_time_s": self.wall_time_s,
        }


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value JSON knows."""
    return value.item() if isinstance(value, np.generic) else value


# ---------------------------------------------------------------------------- validation
def _check_random_state(random_state: Any) -> int:
    if isinstance(random_state, bool) or not isinstance(random_state, int | np.integer) or (
            random_state < 0):
        raise InvalidInputError("random_state", "must be a non-negative integer",
                                random_state)
    return int(random_state)


def _check_texts(texts: Any) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise InvalidInputError("texts", "must be a list of texts", type(texts).__name__)
    batch = list(texts)
    bad = [i for i, t in enumerate(batch) if not isinstance(t, str) or not t.strip()]
    if not batch or bad:
        raise InvalidInputError("texts", "must be a non-empty list of non-empty strings",
                                f"{len(batch)} texts, bad rows {bad[:5]}")
    return batch


def _check_labels(labels: Any, n: int, parameter: str = "labels") -> np.ndarray:
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
                                [_plain(c) for c in classes])
    return y


def _check_groups(groups: Any, n: int) -> np.ndarray | None:
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


def _check_unit_interval(value: Any, parameter: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise InvalidInputError(parameter, "must be a number strictly between 0 and 1", value)
    return float(value)


def _check_positive_int(value: Any, parameter: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise InvalidInputError(parameter, "must be a positive integer", value)
    return int(value)


def _check_cs(cs: Any) -> tuple[float, ...]:
    values = tuple(sorted(float(c) for c in np.atleast_1d(np.asarray(cs, dtype=float))))
    if not values or not all(np.isfinite(c) and c > 0 for c in values):
        raise InvalidInputError("cs", "must be positive finite regularisation strengths",
                                list(values))
    return values


# ---------------------------------------------------------------------------- hidden states
def _is_encoder(model: TextModel) -> bool:
    """BERT-style encoders keep their blocks under ``encoder.layer``."""
    return any(name.endswith("encoder.layer") for name, _ in model.module.named_modules())


def _resolve_pool(model: TextModel, pool: str) -> Pool:
    if pool not in _POOLS:
        raise InvalidInputError("pool", f"must be one of {list(_POOLS)}", pool)
    if pool != "auto":
        return cast(Pool, pool)
    return "cls" if _is_encoder(model) else "last"


def hidden_states(model: TextModel, texts: Sequence[str], *, pool: Pool = "auto",
                  batch_size: int = 32) -> np.ndarray:
    """One pooled vector per text at the embeddings and after every block.

    Parameters
    ----------
    model:
        The text model.
    texts:
        The texts.
    pool:
        ``"cls"``: the first real token (CLS of an encoder); ``"last"``: the last non-pad
        token (what a decoder has read everything at); ``"mean"``: the mean over non-pad
        tokens. ``"auto"`` (default) is ``"cls"`` for BERT-style encoders and ``"last"``
        otherwise.
    batch_size:
        Texts per forward pass.

    Returns
    -------
    np.ndarray
        ``(n_layers + 1, n, d)`` float32: layer 0 is the embedding output, layer ``l`` the
        output of block ``l`` as the model returns it (for Llama and GPT-2 the last entry
        is after the final norm).
    """
    batch = _check_texts(texts)
    how = _resolve_pool(model, pool)
    size = _check_positive_int(batch_size, "batch_size")
    pooled: list[np.ndarray] = []
    with torch.no_grad():
        for start in range(0, len(batch), size):
            enc = model.encode(batch[start:start + size])
            out = model.forward(enc.input_ids, enc.attention_mask, output_hidden_states=True)
            states = getattr(out, "hidden_states", None)
            if not states:
                raise UnsupportedModelError("model", "must return hidden_states when called "
                                            "with output_hidden_states=True",
                                            type(model.module).__name__)
            stack = torch.stack([h.float() for h in states])           # (L+1, b, T, d)
            mask = enc.attention_mask.to(stack.device).bool()          # (b, T)
            rows = torch.arange(mask.shape[0], device=stack.device)
            if how == "mean":
                weights = mask.float() / mask.sum(dim=1, keepdim=True).clamp(min=1)
                vectors = torch.einsum("lbtd,bt->lbd", stack, weights)
            elif how == "cls":
                first = mask.int().argmax(dim=1)
                vectors = stack[:, rows, first]
            else:
                last = mask.shape[1] - 1 - mask.int().flip(dims=[1]).argmax(dim=1)
                vectors = stack[:, rows, last]
            pooled.append(vectors.cpu().numpy().astype(np.float32))
    return np.concatenate(pooled, axis=1)


# ---------------------------------------------------------------------------- random init
def randomly_initialised(model: TextModel, random_state: int = 0) -> TextModel:
    """A copy of the model's architecture with fresh random weights.

    The module is rebuilt from ``model.module.config`` with the same class, so every shape,
    the attention implementation and the head are the same; the initialisation draws from
    a forked torch generator seeded by ``random_state`` (the global seed is left alone).
    """
    seed = _check_random_state(random_state)
    config = getattr(model.module, "config", None)
    if config is None:
        raise UnsupportedModelError("model", "needs a Hugging Face config to rebuild a "
                                    "randomly initialised copy from",
                                    type(model.module).__name__)
    first = next(model.module.parameters())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            fresh = type(model.module)(copy.deepcopy(config))
        except TypeError as exc:
            raise UnsupportedModelError("model", "its class must be constructible from its "
                                        f"config ({exc})", type(model.module).__name__) from exc
    fresh = fresh.to(device=first.device, dtype=first.dtype).eval()
    return TextModel(fresh, model.tokenizer, model.kind, class_names=model.class_names,
                     model_id=f"{model.model_id}:random-init-{seed}", version=model.version,
                     max_length=model.max_length)


# ---------------------------------------------------------------------------- control task
def _first_content_word(text: str) -> str:
    words = [str(w).lower() for w in _WORD.findall(text)]
    for word in words:
        if word not in _STOPWORDS:
            return word
    return words[0] if words else text.strip().lower()


def control_task_labels(texts: Sequence[str], labels: Any, groups: Any = None, *,
                        random_state: int = 0) -> np.ndarray:
    """Hewitt & Liang control labels for text-level probes.

    Each document gets a label that is a fixed random function of the type of its first
    content word (the first word that is not a function word; the first row of a document
    when ``groups`` gives several rows per document), drawn from the empirical distribution
    of ``labels``. Two documents opening with the same content word share their control
    label, so a probe can only learn it by reading word identity.

    Returns
    -------
    np.ndarray
        One control label per row, with the dtype of ``labels``.
    """
    batch = _check_texts(texts)
    y = _check_labels(labels, len(batch))
    g = _check_groups(groups, len(batch))
    seed = _check_random_state(random_state)
    classes, counts = np.unique(y, return_counts=True)
    cumulative = np.cumsum(counts) / counts.sum()
    doc_ids = np.arange(len(batch)) if g is None else g
    first_row: dict[Any, int] = {}
    for row, doc in enumerate(doc_ids.tolist()):
        first_row.setdefault(doc, row)
    out = np.empty(len(batch), dtype=y.dtype)
    for row, doc in enumerate(doc_ids.tolist()):
        word = _first_content_word(batch[first_row[doc]])
        digest = hashlib.sha256(f"{seed}\x00{word}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2.0**64
        index = min(int(np.searchsorted(cumulative, u, side="right")), classes.size - 1)
        out[row] = classes[index]
    return out


# ---------------------------------------------------------------------------- split
def document_split(n: int, labels: Any, groups: Any = None, *, test_size: float = 0.3,
                   random_state: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Train and test rows, with no document on both sides.

    With ``groups`` (one document id per row) the documents are shuffled into the two parts
    (scikit-learn's ``GroupShuffleSplit``); without, every row is its own document and the
    split is stratified by label.

    Returns
    -------
    tuple of np.ndarray
        Sorted train rows and sorted test rows.
    """
    from sklearn.model_selection import GroupShuffleSplit, StratifiedShuffleSplit

    y = _check_labels(labels, n)
    g = _check_groups(groups, n)
    share = _check_unit_interval(test_size, "test_size")
    seed = _check_random_state(random_state)
    rows = np.zeros((n, 1))
    if g is None:
        _, counts = np.unique(y, return_counts=True)
        n_test = int(np.ceil(share * n))
        if counts.min() < 2 or n_test < counts.size or n - n_test < counts.size:
            raise InvalidInputError("labels", "a stratified split needs at least two rows of "
                                    "every class and room for each class on both sides",
                                    dict(zip(*np.unique(y, return_counts=True), strict=True)))
        splitter: Any = StratifiedShuffleSplit(n_splits=1, test_size=share, random_state=seed)
        train, test = next(splitter.split(rows, y))
    else:
        splitter = GroupShuffleSplit(n_splits=1, test_size=share, random_state=seed)
        train, test = next(splitter.split(rows, y, g))
    if np.unique(y[train]).size < 2:
        raise InvalidInputError("groups", "the document split left a single class in the "
                                "training part; use more documents or another random_state",
                                f"{np.unique(g[train]).size if g is not None else train.size}"
                                " training documents")
    return np.sort(train), np.sort(test)


# ---------------------------------------------------------------------------- bootstrap
def _weighted_auroc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray
                    ) -> np.ndarray:
    """AUROC under each row of ``weights`` ``(B, n)``; ties count one half; NaN where a
    replicate has no positive or no negative weight."""
    order = np.argsort(scores, kind="stable")
    s, pos, w = scores[order], positive[order], weights[:, order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    ends = np.r_[starts[1:], s.size]
    tie = np.searchsorted(starts, np.arange(s.size), side="right") - 1
    neg_w = w * ~pos
    cum = np.concatenate([np.zeros((w.shape[0], 1)), np.cumsum(neg_w, axis=1)], axis=1)
    below, at = cum[:, starts], cum[:, ends] - cum[:, starts]
    credit = (below + 0.5 * at)[:, tie]
    pos_w = w * pos
    num = (pos_w * credit).sum(axis=1)
    den = pos_w.sum(axis=1) * neg_w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _bootstrap(correct: np.ndarray, scores: np.ndarray | None, positive: np.ndarray | None,
               units: np.ndarray, n_bootstrap: int, confidence: float,
               rng: np.random.Generator
               ) -> tuple[tuple[float, float], tuple[float, float] | None]:
    """Percentile intervals of accuracy (and AUROC) resampling ``units`` (documents)."""
    _, unit_of_row = np.unique(units, return_inverse=True)
    n_units = int(unit_of_row.max()) + 1
    chunk = max(1, _CHUNK_CELLS // max(1, correct.size))
    accs, aucs = [], []
    for start in range(0, n_bootstrap, chunk):
        b = min(chunk, n_bootstrap - start)
        counts = rng.multinomial(n_units, np.full(n_units, 1.0 / n_units), size=b)
        W = counts[:, unit_of_row].astype(float)
        accs.append(W @ correct / W.sum(axis=1))
        if scores is not None and positive is not None:
            aucs.append(_weighted_auroc(scores, positive, W))
    tail = (1.0 - confidence) / 2.0
    acc_ci = np.quantile(np.concatenate(accs), [tail, 1.0 - tail])
    auc_ci: tuple[float, float] | None = None
    if aucs:
        auc = np.concatenate(aucs)
        if np.isfinite(auc).any():
            lo, hi = np.nanquantile(auc, [tail, 1.0 - tail])
            auc_ci = (float(lo), float(hi))
    return (float(acc_ci[0]), float(acc_ci[1])), auc_ci


# ---------------------------------------------------------------------------- the probe
def _one_standard_error(scores: np.ndarray) -> int:
    """Index of the most regularised ``C`` (the grid is ascending) whose mean
    cross-validated accuracy is within one standard error of the best: the
    one-standard-error rule of Hastie, Tibshirani & Friedman. ``scores`` is
    ``(n_folds, n_cs)``. Accuracy ties are common on near-separable probes, and the simpler
    probe is the more selective one (Hewitt & Liang 2019)."""
    mean, std = scores.mean(axis=0), scores.std(axis=0)
    best = int(np.argmax(mean))
    threshold = mean[best] - std[best] / np.sqrt(scores.shape[0])
    return int(np.flatnonzero(mean >= threshold)[0])


def _choose_c(X: np.ndarray, y: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]],
              cs: tuple[float, ...], max_iter: int) -> float:
    """Cross-validate ``C``: per fold, standardise with the fold's training rows and fit
    the ascending grid warm-started (each fit starts from the previous solution)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scores = np.zeros((len(splits), len(cs)))
    for k, (fit_rows, held_rows) in enumerate(splits):
        scaler = StandardScaler().fit(X[fit_rows])
        Z_fit, Z_held = scaler.transform(X[fit_rows]), scaler.transform(X[held_rows])
        logreg = LogisticRegression(max_iter=max_iter, warm_start=True)
        for j, c in enumerate(cs):
            logreg.set_params(C=c).fit(Z_fit, y[fit_rows])
            scores[k, j] = np.mean(logreg.predict(Z_held) == y[held_rows])
    return cs[_one_standard_error(scores)]


def _fit(X: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray,
         groups: np.ndarray | None, *, random_state: int, n_bootstrap: int,
         confidence: float, cs: tuple[float, ...], max_iter: int) -> ProbeResult:
    """Fit the probe on ``train`` (C by CV inside it) and score it on ``test``."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    X = np.asarray(X, dtype=np.float64)
    X_train, y_train, y_test = X[train], y[train], y[test]
    classes, counts = np.unique(y_train, return_counts=True)
    n_folds = int(min(5, counts.min()))
    if groups is not None:
        n_folds = min(n_folds, int(np.unique(groups[train]).size))
    # Probes are small problems: a threaded BLAS only adds overhead to every L-BFGS step
    # (several times slower on a busy machine), so the fits run on one BLAS thread, as
    # scikit-learn's own KMeans does.
    with threadpool_limits(limits=1, user_api="blas"), \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        if n_folds >= 2 and len(cs) > 1:
            if groups is None:
                folds: Any = StratifiedKFold(n_folds, shuffle=True, random_state=random_state)
                splits = list(folds.split(X_train, y_train))
            else:
                folds = StratifiedGroupKFold(n_folds, shuffle=True, random_state=random_state)
                splits = list(folds.split(X_train, y_train, groups[train]))
            c = _choose_c(X_train, y_train, splits, cs, max_iter)
        else:
            # Too few rows of a class (or documents) to cross-validate: the middle C.
            c = cs[len(cs) // 2]
        scaler = StandardScaler().fit(X_train)
        logreg = LogisticRegression(C=c, max_iter=max_iter).fit(scaler.transform(X_train),
                                                                y_train)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    for w in caught:  # pass on anything that is not about convergence
        if not issubclass(w.category, ConvergenceWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    direction = logreg.coef_ / scaler.scale_
    intercept = logreg.intercept_ - direction @ scaler.mean_

    Z_test = scaler.transform(X[test])
    correct = (logreg.predict(Z_test) == y_test).astype(float)
    majority = classes[int(np.argmax(counts))]
    binary = classes.size == 2 and np.unique(y_test).size == 2
    scores = logreg.decision_function(Z_test) if binary else None
    positive = (y_test == classes[1]) if binary else None
    rng = np.random.default_rng(random_state)
    units = test if groups is None else groups[test]
    acc_ci, auc_ci = _bootstrap(correct, scores, positive, units, n_bootstrap, confidence, rng)
    return ProbeResult(
        accuracy=float(correct.mean()), accuracy_ci=acc_ci,
        auroc=float(roc_auc_score(positive, scores)) if binary else None,
        auroc_ci=auc_ci if binary else None,
        majority_accuracy=float(np.mean(y_test == majority)),
        C=float(c), direction=direction, intercept=np.atleast_1d(intercept),
        classes=tuple(_plain(cl) for cl in classes),
        train_index=train, test_index=test, converged=converged)


def _check_features(X: Any, n: int | None = None) -> np.ndarray:
    A = np.asarray(X, dtype=np.float64) if not isinstance(X, np.ndarray) else X
    if A.ndim != 2 or A.shape[0] < 2 or A.shape[1] < 1:
        raise InvalidInputError("X", "must be a 2-D array (rows, features)", f"shape {A.shape}")
    if n is not None and A.shape[0] != n:
        raise InvalidInputError("X", f"must have {n} rows", A.shape[0])
    if not np.all(np.isfinite(A)):
        raise InvalidInputError("X", "must be finite (no NaN or infinity)", "non-finite values")
    return A


def probe(X: Any, y: Any, groups: Any = None, *, test_size: float = 0.3,
          random_state: int = 0, n_bootstrap: int = 1000, confidence: float = 0.95,
          cs: Sequence[float] = DEFAULT_CS, max_iter: int = 2000) -> ProbeResult:
    """Fit and score one linear probe on an array of representations.

    Parameters
    ----------
    X:
        ``(n, d)`` representations.
    y:
        ``(n,)`` class labels.
    groups:
        ``(n,)`` document ids: train and test parts (and the cross-validation folds) are
        split by document, and the bootstrap resamples documents. ``None``: every row is
        its own document.
    test_size:
        Share of documents in the test part.
    random_state:
        Seeds the split, the folds and the bootstrap.
    n_bootstrap, confidence:
        Bootstrap replicates and the level of the percentile intervals.
    cs:
        Inverse L2 strengths tried by the 5-fold cross-validation (log-loss).
    max_iter:
        Iteration limit of the solver.

    Returns
    -------
    ProbeResult
        Scores, intervals, chosen ``C`` and the probe direction in raw feature units.
    """
    A = _check_features(X)
    labels = _check_labels(y, A.shape[0], "y")
    g = _check_groups(groups, A.shape[0])
    seed = _check_random_state(random_state)
    train, test = document_split(A.shape[0], labels, g, test_size=test_size,
                                 random_state=seed)
    return _fit(A, labels, train, test, g, random_state=seed,
                n_bootstrap=_check_positive_int(n_bootstrap, "n_bootstrap"),
                confidence=_check_unit_interval(confidence, "confidence"),
                cs=_check_cs(cs), max_iter=_check_positive_int(max_iter, "max_iter"))


def probe_layers(model: TextModel, texts: Sequence[str], labels: Any, *, groups: Any = None,
                 test_size: float = 0.3, random_state: int = 0, controls: bool = True,
                 control_labels: Any = None, random_model: TextModel | None = None,
                 pool: Pool = "auto", batch_size: int = 32, n_bootstrap: int = 1000,
                 confidence: float = 0.95, cs: Sequence[float] = DEFAULT_CS
                 ) -> ProbeReport:
    """Probe every layer of a model for a text-level label, with controls.

    Parameters
    ----------
    model:
        The text model (encoder classifier or causal LM).
    texts, labels:
        The texts and one class label per text.
    groups:
        One document id per text; no document is put on both sides of the split. ``None``:
        every text is its own document.
    test_size, random_state:
        Share of documents held out; the seed of the split, folds, bootstrap, random-init
        model and control task.
    controls:
        Also run the random-init model and the control task (the majority class is always
        reported).
    control_labels:
        The control task's labels, one per text; by default :func:`control_task_labels`
        (a fixed random label per first content word type).
    random_model:
        The randomly initialised model to compare with; by default
        :func:`randomly_initialised` ``(model, random_state)``.
    pool, batch_size:
        How texts become vectors (see :func:`hidden_states`) and texts per forward pass.
    n_bootstrap, confidence, cs:
        As in :func:`probe`.

    Returns
    -------
    ProbeReport
        Per-layer task, random-init and control-task probes, and selectivity.
    """
    started = time.perf_counter()
    batch = _check_texts(texts)
    y = _check_labels(labels, len(batch))
    g = _check_groups(groups, len(batch))
    seed = _check_random_state(random_state)
    how = _resolve_pool(model, pool)
    size = _check_positive_int(batch_size, "batch_size")
    replicates = _check_positive_int(n_bootstrap, "n_bootstrap")
    level = _check_unit_interval(confidence, "confidence")
    strengths = _check_cs(cs)
    control_y: np.ndarray | None = None
    if control_labels is not None:
        if not controls:
            raise InvalidInputError("control_labels", "is only used with controls=True",
                                    "given with controls=False")
        control_y = _check_labels(control_labels, len(batch), "control_labels")
    if random_model is not None and (not isinstance(random_model, TextModel) or (
            type(random_model.module) is not type(model.module)
            or random_model.blocks.n_layers != model.blocks.n_layers)):
        raise InvalidInputError("random_model", "must be a TextModel of the same "
                                "architecture as model",
                                type(getattr(random_model, "module", random_model)).__name__)
    train, test = document_split(len(batch), y, g, test_size=test_size, random_state=seed)

    def run(states: np.ndarray, targets: np.ndarray) -> tuple[ProbeResult, ...]:
        return tuple(_fit(layer, targets, train, test, g, random_state=seed,
                          n_bootstrap=replicates, confidence=level, cs=strengths,
                          max_iter=2000) for layer in states)

    states = hidden_states(model, batch, pool=how, batch_size=size)
    task = run(states, y)
    random_init = control = None
    source = other_id = None
    if controls:
        other = random_model or randomly_initialised(model, seed)
        other_id = other.model_id
        random_init = run(hidden_states(other, batch, pool=how, batch_size=size), y)
        source = "given" if control_y is not None else "first_content_word"
        if control_y is None:
            control_y = control_task_labels(batch, y, g, random_state=seed)
        if np.unique(control_y[train]).size < 2:
            raise InvalidInputError("control_labels", "the control task has a single class "
                                    "in the training part (the texts' first content words "
                                    "vary too little); pass control_labels",
                                    [_plain(c) for c in np.unique(control_y)])
        control = run(states, control_y)

    def n_docs(rows: np.ndarray) -> int:
        return int(rows.size if g is None else np.unique(g[rows]).size)

    classes = tuple(_plain(c) for c in np.unique(y))
    return ProbeReport(
        task=task, random_init=random_init, control=control,
        majority_accuracy=task[0].majority_accuracy, pool=how, classes=classes,
        train_index=train, test_index=test, n_documents_train=n_docs(train),
        n_documents_test=n_docs(test),
        parameters={"test_size": float(test_size), "pool": how, "batch_size": size,
                    "controls": bool(controls), "control_labels": source,
                    "grouped": g is not None, "random_state": seed,
                    "n_bootstrap": replicates, "confidence": level, "cs": list(strengths),
                    "model_id": model.model_id, "random_model_id": other_id},
        wall_time_s=time.perf_counter() - started)


# ---------------------------------------------------------------------------- renderings
def probe_explanation(report: ProbeReport, model: TextModel) -> Explanation:
    """The report as the one result type: ``values`` is ``(1, n_layers)`` task accuracy per
    layer, named by ``feature_names``; ``target`` is the best layer and ``prediction``
    repeats the accuracies (so ``explained_output()`` is the best accuracy); the controls
    and intervals are in ``parameters["report"]``."""
    if not isinstance(report, ProbeReport):
        raise InvalidInputError("report", "must be a ProbeReport", type(report).__name__)
    accuracies = report.accuracies[None, :]
    explanation = text_explanation(
        model, "linear_probe", accuracies, target=[report.best_layer],
        prediction=accuracies, output_space="probability",
        parameters={"report": report.to_dict(), "quantity": "probe test accuracy"},
        wall_time_s=report.wall_time_s, seed=int(report.parameters.get("random_state", 0)))
    return replace(explanation, feature_names=report.layer_names)


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
