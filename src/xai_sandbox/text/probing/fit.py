"""Fitting and scoring the probes: cross-validated L2 logistic regression, bootstrap
intervals, per-layer probes with their controls, and the report as an Explanation."""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from xai_sandbox.errors import InvalidInputError
from xai_sandbox.explainers.explanation import Explanation, TextDetail
from xai_sandbox.text import checks
from xai_sandbox.text.model import TextModel, text_explanation
from xai_sandbox.text.probing.data import (
    control_task_labels,
    document_split,
    hidden_states,
    randomly_initialised,
    resolve_pool,
)
from xai_sandbox.text.probing.results import (
    CHUNK_CELLS,
    DEFAULT_CS,
    Pool,
    ProbeReport,
    ProbeResult,
    check_cs,
    check_groups,
    check_labels,
    plain,
)

__all__ = ["probe", "probe_explanation", "probe_layers"]


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
    chunk = max(1, CHUNK_CELLS // max(1, correct.size))
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
        classes=tuple(plain(cl) for cl in classes),
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
    labels = check_labels(y, A.shape[0], "y")
    g = check_groups(groups, A.shape[0])
    seed = checks.integer("random_state", random_state, 0)
    train, test = document_split(A.shape[0], labels, g, test_size=test_size,
                                 random_state=seed)
    return _fit(A, labels, train, test, g, random_state=seed,
                n_bootstrap=checks.integer("n_bootstrap", n_bootstrap, 1),
                confidence=checks.unit_interval("confidence", confidence),
                cs=check_cs(cs), max_iter=checks.integer("max_iter", max_iter, 1))


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
    batch = checks.texts("texts", texts)
    y = check_labels(labels, len(batch))
    g = check_groups(groups, len(batch))
    seed = checks.integer("random_state", random_state, 0)
    how = resolve_pool(model, pool)
    size = checks.integer("batch_size", batch_size, 1)
    replicates = checks.integer("n_bootstrap", n_bootstrap, 1)
    level = checks.unit_interval("confidence", confidence)
    strengths = check_cs(cs)
    control_y: np.ndarray | None = None
    if control_labels is not None:
        if not controls:
            raise InvalidInputError("control_labels", "is only used with controls=True",
                                    "given with controls=False")
        control_y = check_labels(control_labels, len(batch), "control_labels")
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
                                    [plain(c) for c in np.unique(control_y)])
        control = run(states, control_y)

    def n_docs(rows: np.ndarray) -> int:
        return int(rows.size if g is None else np.unique(g[rows]).size)

    classes = tuple(plain(c) for c in np.unique(y))
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
        wall_time_s=report.wall_time_s, seed=int(report.parameters.get("random_state", 0)),
        text=TextDetail("probe_report", report.to_dict()))
    return replace(explanation, feature_names=report.layer_names)
