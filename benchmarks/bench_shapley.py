"""Exact Shapley values (ours) vs shap's KernelExplainer, per German credit row.

Both solve the same cooperative game: players are groups of the applicant's features,
absent players take the value of a typical applicant, and the payoff is the MLP's 'bad'
logit. Ours enumerates every coalition; KernelExplainer samples them (its defaults:
nsamples='auto', l1_reg='auto'). The error of each is measured against the exact values
(relative L2 error per row, median over rows). Runs with 12, 16 and 20 players (the 20
features of the data; 12 and 16 by merging features in schema order).
"""

from __future__ import annotations

import warnings

import numpy as np

from _common import alternate, parse, versions
from xai_sandbox.demos.credit import credit_models
from xai_sandbox.explainers import explain
from xai_sandbox.explainers.shapley import _import_shap, coalition_values


def _groups(names: tuple[str, ...], k: int) -> dict[str, list[str]]:
    """k groups of features: the first ones alone, the rest merged in pairs in order."""
    groups: dict[str, list[str]] = {}
    merge = len(names) - k  # this many pairs
    i = 0
    while i < len(names):
        if merge > 0:
            groups[f"{names[i]}+{names[i + 1]}"] = [names[i], names[i + 1]]
            merge -= 1
            i += 2
        else:
            groups[names[i]] = [names[i]]
            i += 1
    return groups


def main() -> None:
    args = parse(__doc__ or "")
    shap = _import_shap()
    models = credit_models()
    model, schema = models.mlp, models.data.schema
    rows = models.data.X[models.test[: 3 if args.quick else 10]]
    print(f"Exact Shapley vs shap KernelExplainer, German credit MLP ({versions()})")
    print(f"{'players':>8} {'ours exact':>12} {'kernel auto':>12} {'ratio':>7} "
          f"{'kernel error':>13} {'kernel 1000':>12} {'ratio':>7} {'error':>8}")
    for k in ((12, 16) if args.quick else (12, 16, 20)):
        groups = _groups(schema.names, k)
        cols = [tuple(c for f in feats for c in schema.groups[schema.names.index(f)])
                for feats in groups.values()]
        owner = np.zeros(len(schema.columns), dtype=np.int64)
        for g, cs in enumerate(cols):
            owner[list(cs)] = g
        bits = 1 << np.arange(k, dtype=np.int64)
        background = model.reference[None] if model.reference.ndim == 1 else model.reference

        def exact(x):  # type: ignore[no-untyped-def]
            return explain(model, x[None], method="exact_shapley", target=1,
                           groups=groups).values[0]

        def kernel(x, nsamples):  # type: ignore[no-untyped-def]
            def game(z: np.ndarray) -> np.ndarray:
                return coalition_values(model.adapter, x, background, owner,
                                        (z > 0.5).astype(np.int64) @ bits, 1)

            explainer = shap.KernelExplainer(game, np.zeros((1, k)))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return np.asarray(explainer.shap_values(np.ones((1, k)), nsamples=nsamples,
                                                        silent=True)).reshape(-1)[:k]

        t_e, t_k, t_k1, err_k, err_k1 = [], [], [], [], []
        for x in rows:
            np.random.seed(0)  # shap's KernelExplainer samples from numpy's global generator
            runs = alternate({"exact": lambda x=x: exact(x),
                              "auto": lambda x=x: kernel(x, "auto"),
                              "1000": lambda x=x: kernel(x, 1000)},
                             repeats=1 if args.quick else 3)
            phi = runs["exact"][1]
            t_e.append(runs["exact"][0])
            t_k.append(runs["auto"][0])
            t_k1.append(runs["1000"][0])
            err_k.append(np.linalg.norm(runs["auto"][1] - phi) / np.linalg.norm(phi))
            err_k1.append(np.linalg.norm(runs["1000"][1] - phi) / np.linalg.norm(phi))
        te, tk, tk1 = np.median(t_e), np.median(t_k), np.median(t_k1)
        print(f"{k:>8} {te * 1e3:>10.2f}ms {tk * 1e3:>10.2f}ms {tk / te:>6.1f}x "
              f"{np.median(err_k):>12.2%} {tk1 * 1e3:>10.2f}ms {tk1 / te:>6.1f}x "
              f"{np.median(err_k1):>7.2%}")
    print("ours: exact (no sampling error; adds up to f(x) to float32 rounding); "
          "ratio > 1: ours is faster")


if __name__ == "__main__":
    main()
