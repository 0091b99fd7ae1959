"""Shapley values: exact enumeration, KernelSHAP (shap) and TreeSHAP (shap).

The cooperative game is the same for the exact and the kernel method: the players are the
features (one-hot columns of one categorical feature play as one) and the value of a
coalition S is the model's output with the features of S taken from the input and the
others from each background row, averaged over the background (interventional Shapley
values). Exact enumeration evaluates all 2^d coalitions in a few large batches and solves
the Shapley sum with array arithmetic; it is the reference the sampled methods are
measured against.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from xai_sandbox.errors import InvalidInputError, UnsupportedModelError
from xai_sandbox.explainers.base import Explainer, Problem, Result, register_explainer
from xai_sandbox.explainers.coalitions import (
    BATCH_ELEMENTS,
    coalition_values,
    coalition_values_rows,
    shapley_from_values,
    size_weights,
)
from xai_sandbox.models.adapters import model_errors

__all__ = ["ExactShapley", "KernelShap", "OwenShapley", "PermutationShap", "TreeShap",
           "coalition_values", "owen_coalitions", "shapley_from_values"]



# shap tells every binary LightGBM explanation that its output layout changed; this module
# reads both layouts. A process-wide filter, because catch_warnings is not thread-safe.
warnings.filterwarnings("ignore", message="LightGBM binary classifier with TreeExplainer",
                        category=UserWarning)


# shap's KernelExplainer (0.51) samples coalitions from numpy's global generator and takes
# no seed. Each call runs under this lock with the global state seeded from the problem's
# own generator and put back afterwards, so concurrent jobs cannot interleave their draws
# and the caller's numpy stream is left as it was.
_NUMPY_GLOBAL_LOCK = threading.RLock()


@contextlib.contextmanager
def _numpy_global_stream(rng: np.random.Generator) -> Iterator[None]:
    """Numpy's global generator, seeded from ``rng``, held by this thread alone inside the
    block and restored on exit. Only for library code that cannot take a generator."""
    seed = int(rng.integers(2**32))
    with _NUMPY_GLOBAL_LOCK:
        state = np.random.get_state()
        np.random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(state)


@functools.cache
def _import_shap() -> Any:
    """Import shap without its import-time deprecation noise from matplotlib."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        import shap
    return shap


def _players(problem: Problem) -> tuple[np.ndarray, int, tuple[str, ...] | None]:
    """The player owning each column, the number of players, and their names."""
    if problem.inputs.ndim != 2:
        raise UnsupportedModelError("inputs", "Shapley methods here take tabular rows",
                                    problem.inputs.shape)
    players, names = problem.players()
    owner = np.zeros(problem.inputs.shape[1], dtype=np.int64)
    for k, cols in enumerate(players):
        owner[list(cols)] = k
    return owner, len(players), names


def _solve_rows(problem: Problem, d: int,
                solve: Callable[[int], tuple[np.ndarray, float]]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shapley values and base value of every row; the additivity error of each is taken
    against the model's own f(x), not the game's v(all players)."""
    values = np.empty((problem.n, d))
    expected = np.empty(problem.n)
    with model_errors(problem.inputs.shape):
        for r in range(problem.n):
            values[r], expected[r] = solve(r)
    return values, expected, _additivity(problem, values, expected)


def _additivity(problem: Problem, values: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """sum(phi) - (f(x) - base) per row, against the model's own f(x)."""
    f_x = problem.prediction[np.arange(problem.n), problem.target]
    delta: np.ndarray = values.sum(axis=1) - (f_x - expected)
    return delta


def _background(problem: Problem) -> np.ndarray:
    return problem.background if problem.background is not None else problem.baselines


class _CoalitionGame(Explainer):
    """The game of the exact and kernel methods: coalitions against a background, or
    against the baselines where there is no background."""

    input_kinds = ("tabular",)
    reads = frozenset({"background", "baselines"})

    def unused(self, problem: Problem) -> dict[str, str]:
        out = super().unused(problem)
        if "baselines" in problem.given and problem.background is not None:
            whose = ("the one given" if "background" in problem.given
                     else "the registered model's")
            out["baselines"] = (f"{self.name} averages over the background ({whose}) and "
                                "uses baselines only when there is none: pass the rows as "
                                "background=")
        return out


def _elements(problem: Problem) -> int:
    """Input elements per model call within the memory budget (on a CPU at most
    ``BATCH_ELEMENTS``)."""
    d = max(1, int(np.prod(problem.inputs.shape[1:])))
    return d * problem.batcher.size(problem.point_bytes(), 1 << 40,
                                    cpu_cap=max(1, BATCH_ELEMENTS // d))


def _values(problem: Problem, x: np.ndarray, bg: np.ndarray, owner: np.ndarray,
            coalitions: np.ndarray, target: int) -> np.ndarray:
    """v(S) of ``coalitions`` for row ``x``, in passes sized to the memory budget and
    halved on an out-of-memory error."""
    return problem.batcher.call(_elements(problem), lambda e: coalition_values(
        problem.adapter, x, bg, owner, coalitions, target, elements=e))


@register_explainer
class ExactShapley(_CoalitionGame):
    """Exact interventional Shapley values by enumerating every coalition.

    Cost: 2^d x (background rows) model evaluations per input, so ``max_players`` (20
    by default) guards against a request that would not finish; the German credit data's
    20 features take about a second per row on a small MLP.
    """

    name = "exact_shapley"
    summary = "exact Shapley values over features or feature groups (all 2^d coalitions)"

    def __init__(self, max_players: int = 20) -> None:
        self.max_players = max_players

    def run(self, problem: Problem) -> Result:
        owner, d, names = _players(problem)
        if not isinstance(self.max_players, int) or not 1 <= self.max_players <= 24:
            raise InvalidInputError("max_players", "must be an integer in [1, 24]",
                                    self.max_players)
        if d > self.max_players:
            raise InvalidInputError(
                "inputs", f"exact Shapley enumerates 2^d coalitions: at most max_players="
                f"{self.max_players} features or groups (use kernel_shap)", f"{d} players")
        masks = np.arange(1 << d, dtype=np.int64)
        bg = _background(problem)
        # Every row's game at once: small games share model calls (coalition_values_rows).
        with model_errors(problem.inputs.shape):
            v = problem.batcher.call(_elements(problem), lambda e: coalition_values_rows(
                problem.adapter, problem.inputs, bg, owner, masks, problem.target, elements=e))
        values, expected = shapley_from_values(v, d), v[:, 0].copy()
        delta = _additivity(problem, values, expected)
        return Result(values=values, expected_value=expected, delta=delta, feature_names=names,
                      baseline=bg, output_space=problem.adapter.output_space,
                      extra={"players": d, "background_rows": int(bg.shape[0])})


@register_explainer
class KernelShap(_CoalitionGame):
    """KernelSHAP through shap's ``KernelExplainer`` on the same coalition game.

    shap samples from numpy's global generator; each row's call runs with it seeded from
    the problem's ``rng`` under a lock and restored afterwards (see
    ``_numpy_global_stream``), so the result depends on ``random_state`` alone.

    Parameters
    ----------
    n_samples:
        Coalitions sampled per row (``"auto"``: shap's default 2d + 2048).
    l1_reg:
        shap's feature selection; ``False`` (default) estimates every feature.
    """

    name = "kernel_shap"
    summary = "KernelSHAP estimate of Shapley values (shap KernelExplainer)"
    samples = True

    def __init__(self, n_samples: int | str = "auto", l1_reg: bool | str = False) -> None:
        self.n_samples = n_samples
        self.l1_reg = l1_reg

    def run(self, problem: Problem) -> Result:
        shap = _import_shap()

        if self.n_samples != "auto" and (not isinstance(self.n_samples, int)
                                         or self.n_samples < 2):
            raise InvalidInputError("n_samples", "must be 'auto' or an integer >= 2",
                                    self.n_samples)
        owner, d, names = _players(problem)
        bits = 1 << np.arange(d, dtype=np.int64)
        bg = _background(problem)

        def solve(r: int) -> tuple[np.ndarray, float]:
            x, t = problem.inputs[r], int(problem.target[r])

            def game(z: np.ndarray) -> np.ndarray:
                ids = (z > 0.5).astype(np.int64) @ bits
                return _values(problem, x, bg, owner, ids, t)

            explainer = shap.KernelExplainer(game, np.zeros((1, d)))
            with _numpy_global_stream(problem.rng):
                phi = explainer.shap_values(np.ones((1, d)), nsamples=self.n_samples,
                                            l1_reg=self.l1_reg, silent=True)
            return (np.asarray(phi).reshape(-1)[:d],
                    float(np.asarray(explainer.expected_value).reshape(-1)[0]))

        values, expected, delta = _solve_rows(problem, d, solve)
        return Result(values=values, expected_value=expected, delta=delta, feature_names=names,
                      baseline=bg, output_space=problem.adapter.output_space,
                      extra={"players": d, "background_rows": int(bg.shape[0])})


def owen_coalitions(sizes: Sequence[int]) -> int:
    """Coalitions the exact Owen values of unions of these sizes evaluate: the 2^m
    unions' coalitions, and for each union of g >= 2 members its 2^g - 2 proper parts
    beside every coalition of the other unions."""
    m = len(sizes)
    return (1 << m) + sum(((1 << g) - 2) << (m - 1) for g in sizes if g >= 2)


@register_explainer
class OwenShapley(_CoalitionGame):
    """Exact Owen values (Owen 1977): Shapley values under a structure of a priori unions,
    on the same coalition game as the exact method.

    The unions (declared feature groups: "loan" = duration, amount and monthly amount)
    play a Shapley game among themselves, and each union's share is divided among its
    members by a Shapley game inside the union in which the other unions come whole or not
    at all. Every feature gets its own value; the values of a union's members add up to
    the union's Shapley value among the unions, and all of them to f(x) - E f. With every
    feature its own union (the default) they are the Shapley values; with one union of
    everything, too.

    Cost: the 2^m coalitions of the m unions, plus (2^g - 2) 2^(m-1) for each union of g
    members (:func:`owen_coalitions`), where exact Shapley values over the features cost
    2^d: declared groups bring a model past the exact limit back within exact reach, per
    feature.

    Parameters
    ----------
    unions:
        ``{"loan": ["duration", "credit_amount"], ...}``: disjoint groups of the features
        (or of the requested ``groups=``); a feature named in none is a union of its own.
    max_coalitions:
        The most coalitions one row may evaluate (at most 2^24).
    """

    name = "owen_shapley"
    summary = ("exact Owen values: Shapley values between declared feature groups and "
               "within each, one value per feature")

    def __init__(self, unions: Mapping[str, Sequence[str]] | None = None,
                 max_coalitions: int = 1 << 22) -> None:
        self.unions = unions
        self.max_coalitions = max_coalitions

    def partition(self, names: Sequence[str]) -> list[list[int]]:
        """The unions as lists of player indices, every player in exactly one."""
        index = {n: i for i, n in enumerate(names)}
        unions = {} if self.unions is None else self.unions
        if not isinstance(unions, Mapping):
            raise InvalidInputError("unions", "must be a mapping of name to features",
                                    unions)
        out: list[list[int]] = []
        seen: dict[str, str] = {}
        for label, members in unions.items():
            if isinstance(members, str) or not isinstance(members, Sequence) or not members:
                raise InvalidInputError(f"unions[{label!r}]", "must be a non-empty list of "
                                        "feature names", members)
            for name in members:
                if name not in index:
                    raise InvalidInputError(f"unions[{label!r}]", f"must name features of "
                                            f"the explanation {list(names)}", name)
                if name in seen:
                    raise InvalidInputError(f"unions[{label!r}]", f"must not name a feature "
                                            f"of another union ({seen[name]!r})", name)
                seen[name] = str(label)
            out.append([index[n] for n in members])
        out += [[i] for i, n in enumerate(names) if n not in seen]
        return out

    def run(self, problem: Problem) -> Result:
        owner, d, names = _players(problem)
        cap = self.max_coalitions
        if isinstance(cap, bool) or not isinstance(cap, int) or not 1 <= cap <= 1 << 24:
            raise InvalidInputError("max_coalitions", "must be an integer in [1, 2^24]", cap)
        labels = names if names is not None else tuple(str(i) for i in range(d))
        unions = self.partition(labels)
        cost = owen_coalitions([len(u) for u in unions])
        if cost > cap:
            raise InvalidInputError(
                "unions", f"exact Owen values over {len(unions)} unions of sizes "
                f"{sorted(len(u) for u in unions)} evaluate {cost:,} coalitions per row, "
                f"over max_coalitions={cap:,} (group more features, or use "
                "permutation_shap)", {str(k): list(v) for k, v in (self.unions or {}).items()})
        m = len(unions)
        union_bits = np.array([sum(1 << p for p in u) for u in unions], dtype=np.int64)
        # Feature-level masks of every coalition of whole unions (index = union mask).
        whole = (((np.arange(1 << m, dtype=np.int64)[:, None] >> np.arange(m)) & 1)
                 * union_bits).sum(axis=1)
        outer = size_weights(m)[1]   # k joining R: |R|! (m - |R| - 1)! / m!
        bg = _background(problem)

        def solve(r: int) -> tuple[np.ndarray, float]:
            x, t = problem.inputs[r], int(problem.target[r])
            v_whole = _values(problem, x, bg, owner, whole, t)
            between = shapley_from_values(v_whole, m)
            values = np.empty(d)
            for k, members in enumerate(unions):
                if len(members) == 1:
                    values[members[0]] = between[k]
                    continue
                # Coalitions R of the other unions (as union masks without bit k), each
                # with its Shapley weight among m unions.
                rest = np.flatnonzero((np.arange(1 << m) & (1 << k)) == 0)
                weight = outer[rest]
                g = len(members)
                parts = np.arange(1, (1 << g) - 1, dtype=np.int64)
                part_bits = (((parts[:, None] >> np.arange(g)) & 1)
                             * (1 << np.array(members, dtype=np.int64))).sum(axis=1)
                masks = whole[rest][:, None] | part_bits[None, :]
                v = _values(problem, x, bg, owner, masks.reshape(-1), t)
                inner = np.empty(1 << g)
                inner[1:-1] = weight @ v.reshape(masks.shape)
                inner[0] = weight @ v_whole[rest]
                inner[-1] = weight @ v_whole[rest | (1 << k)]
                values[members] = shapley_from_values(inner, g)
            return values, float(v_whole[0])

        values, expected, delta = _solve_rows(problem, d, solve)
        return Result(values=values, expected_value=expected, delta=delta, feature_names=names,
                      baseline=bg, output_space=problem.adapter.output_space,
                      extra={"players": d, "background_rows": int(bg.shape[0]),
                             "union_sizes": {", ".join(labels[p] for p in u): len(u)
                                             for u in unions if len(u) > 1},
                             "coalitions": cost})


def _seeded_permutations(generator: torch.Generator
                         ) -> Callable[[int, int], Iterator[list[int]]]:
    """Random orders of the players as Captum's ShapleyValueSampling draws them, from
    ``generator`` instead of torch's global generator."""

    def permutations(num_features: int, num_samples: int) -> Iterator[list[int]]:
        for _ in range(num_samples):
            yield torch.randperm(num_features, generator=generator).tolist()

    return permutations


@register_explainer
class PermutationShap(_CoalitionGame):
    """Shapley values estimated from random orders of the players (Strumbelj and
    Kononenko 2014) on the same coalition game as the exact method, with their standard
    error: Captum's ``ShapleyValueSampling`` algorithm, with the orders drawn as Captum
    draws them (``torch.randperm``, from the problem's ``torch_generator``) and every
    order's d + 1 nested coalitions evaluated in one batch, in float64 (Captum
    accumulates in float32 and evaluates its coalitions a few at a time; the tests check
    the values equal Captum's for the same orders).

    Every order's marginal contributions add up to v(all) - v(none), so the estimate is
    complete (efficient) whatever the number of orders; what sampling costs is variance.
    Each value's standard error is the spread of its marginal contributions over the
    orders divided by the square root of their number, and ``error_bound`` is 1.96 times
    the largest one (a 95% normal interval for every player of every row). Cost: orders
    x (players + 1) x background rows model evaluations per row, linear in the players
    where the exact method doubles.

    Parameters
    ----------
    n_permutations:
        Orders of the players per row.
    """

    name = "permutation_shap"
    summary = ("Shapley values estimated from random feature orders, with a standard error "
               "(Captum ShapleyValueSampling's algorithm, in float64)")
    samples = True

    def __init__(self, n_permutations: int = 64) -> None:
        self.n_permutations = n_permutations

    def run(self, problem: Problem) -> Result:
        n = self.n_permutations
        if isinstance(n, bool) or not isinstance(n, int) or not 2 <= n <= 100_000:
            raise InvalidInputError("n_permutations", "must be an integer in [2, 100000]", n)
        owner, d, names = _players(problem)
        bg = _background(problem)
        errors = np.empty((problem.n, d))
        orders = _seeded_permutations(problem.torch_generator)

        def solve(r: int) -> tuple[np.ndarray, float]:
            x, t = problem.inputs[r], int(problem.target[r])
            contributions = np.empty((n, d))
            per = max(1, _elements(problem) // max(1, (d + 1) * bg.shape[0] * d))
            drawn = np.array(list(orders(d, n)), dtype=np.int64)
            # Order k's coalitions: its first 0, 1, ..., d players, as bit masks.
            prefix = np.zeros((n, d + 1), dtype=np.int64)
            prefix[:, 1:] = np.cumsum(1 << drawn, axis=1)
            for start in range(0, n, per):
                block = prefix[start:start + per]
                v = _values(problem, x, bg, owner, block.reshape(-1), t)
                v = v.reshape(block.shape)
                rows = np.arange(block.shape[0])[:, None]
                contributions[start + rows, drawn[start:start + per]] = np.diff(v, axis=1)
            errors[r] = contributions.std(axis=0, ddof=1) / math.sqrt(n)
            empty = _values(problem, x, bg, owner, np.zeros(1, np.int64), t)
            return contributions.mean(axis=0), float(empty[0])

        values, expected, delta = _solve_rows(problem, d, solve)
        return Result(values=values, expected_value=expected, delta=delta, feature_names=names,
                      baseline=bg, output_space=problem.adapter.output_space,
                      extra={"players": d, "background_rows": int(bg.shape[0]),
                             "standard_error": errors.tolist(),
                             "error_bound": float(1.96 * errors.max()),
                             "error_bound_meaning": "95% interval half-width of every "
                             "value (1.96 x its largest standard error)"})


_TREE_EXPLAINERS: dict[tuple[int, bytes | None], tuple[Any, Any]] = {}
_TREE_LOCK = threading.Lock()


def _tree_explainer(shap: Any, adapter: Any, background: np.ndarray | None) -> Any:
    """shap's TreeExplainer for this estimator and background, built once.

    Building one parses the whole ensemble (for LightGBM, a JSON dump of every tree: tens
    of milliseconds); explaining a row with it takes well under one. The estimator is
    never changed after registration (its fingerprint would change), so the parsed trees
    stay valid; the cache holds the estimator itself, so its id is never reused.
    """
    est = adapter.estimator
    key = (id(est), None if background is None else hashlib.sha256(
        np.ascontiguousarray(background, dtype=np.float64).tobytes()).digest())
    with _TREE_LOCK:
        found = _TREE_EXPLAINERS.get(key)
    if found is not None:
        return found[1]
    if background is not None:
        explainer = shap.TreeExplainer(est, data=background,
                                       feature_perturbation="interventional",
                                       model_output="raw")
    else:
        explainer = shap.TreeExplainer(est, feature_perturbation="tree_path_dependent")
    with _TREE_LOCK:
        if len(_TREE_EXPLAINERS) >= 32:
            _TREE_EXPLAINERS.pop(next(iter(_TREE_EXPLAINERS)))
        _TREE_EXPLAINERS[key] = (est, explainer)
    return explainer


@register_explainer
class TreeShap(Explainer):
    """TreeSHAP (Lundberg et al. 2020) through shap's ``TreeExplainer``, in margin space.

    Path-dependent by default; interventional when a ``background`` is given. For a binary
    booster the margin of class 0 is minus that of class 1, so both targets are exact.
    ``output_space`` is ``"margin"`` for boosters (the log-odds of a binary one) and the
    model's own (``"probability"``) for forests and trees, whose margin is their
    probability. There is no baseline: ``baselines=`` is refused.
    """

    name = "tree_shap"
    summary = "exact Shapley values of tree ensembles (shap TreeExplainer)"
    requires = "trees"
    input_kinds = ("tabular",)
    reads = frozenset({"background"})

    def run(self, problem: Problem) -> Result:
        shap = _import_shap()

        adapter = problem.adapter
        X = problem.inputs.astype(np.float64)
        with model_errors(X.shape), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # shap's notes on feature_perturbation
            explainer = _tree_explainer(shap, adapter, problem.background)
            sv = explainer.shap_values(X, check_additivity=False)
        margin = adapter.predict_margin(X)  # type: ignore[attr-defined]
        sv = np.stack(sv, axis=-1) if isinstance(sv, list) else np.asarray(sv)
        sv = sv[..., None] if sv.ndim == 2 else sv
        ev = np.atleast_1d(np.asarray(explainer.expected_value, dtype=np.float64))
        k = problem.prediction.shape[1]
        if sv.shape[-1] == 1 and k == 2 and margin.shape[1] == 1:
            # Binary booster: one margin, the log-odds of class 1.
            sv = np.concatenate([-sv, sv], axis=-1)
            ev = np.array([-ev[0], ev[0]])
            margin = np.concatenate([-margin, margin], axis=1)
        if sv.shape[-1] != margin.shape[1]:
            raise UnsupportedModelError("model", "TreeSHAP outputs do not match the model's "
                                        "margins", f"{sv.shape} vs {margin.shape}")
        rows = np.arange(problem.n)
        values = sv[rows, :, problem.target]
        expected = ev[problem.target]
        delta = values.sum(axis=1) - (margin[rows, problem.target] - expected)
        space = "margin" if margin.shape != problem.prediction.shape or not np.allclose(
            margin, problem.prediction) else adapter.output_space
        return Result(values=values, expected_value=expected, delta=delta, prediction=margin,
                      output_space=space,
                      extra={"feature_perturbation": "interventional" if problem.background
                             is not None else "tree_path_dependent"})
