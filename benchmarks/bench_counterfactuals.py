"""Counterfactuals on German credit: ours vs DiCE (random and genetic), same constraints.

Each method gets the same rejected applicants, the same model (the MLP, approval = class
'good'), the same mutable features (never protected ones) and, per applicant, the same
permitted ranges (training range, cut at the applicant's value on the side a monotone
rule forbids). Every counterfactual returned is re-scored by the model. Reported per
method: share of applicants with at least one valid option, validity (share of options
that flip), feasibility (share that respect every constraint), proximity (normalised
distance: numeric change over the feature's standard deviation, plus 1 per changed
category; lower is closer), sparsity (features changed), diversity (mean pairwise
distance between one applicant's options) and time per applicant.
"""

from __future__ import annotations

import importlib.metadata
import itertools
import os
import statistics
import time
import warnings
from typing import Any

import numpy as np
import pandas as pd

from _common import parse, versions
from xai_sandbox.counterfactuals import find_counterfactuals
from xai_sandbox.demos.credit import credit_models


def main() -> None:
    args = parse(__doc__ or "")
    os.environ.setdefault("TQDM_DISABLE", "1")  # DiCE draws a progress bar per query
    import dice_ml

    models = credit_models()
    data, model, schema = models.data, models.mlp, models.data.schema
    train = data.X[models.train]
    frame = pd.DataFrame([data.rows[i] for i in models.train])
    frame["outcome"] = 1 - data.y[models.train]  # 1 = good, DiCE flips towards it
    numeric = [f.name for f in schema.features if f.kind == "numeric"]
    mutable = [f.name for f in schema.features if f.mutable and not f.protected]
    std = {n: float(frame[n].std()) or 1.0 for n in numeric}

    class Wrapped:
        """The registered MLP as DiCE sees a scikit-learn classifier: P(good), P(bad)->1-."""

        def predict_proba(self, df: pd.DataFrame) -> np.ndarray:
            rows = df[list(schema.names)].to_dict("records")
            for r in rows:
                for n in numeric:
                    r[n] = float(r[n])
            logits = model.adapter.predict(schema.encode(rows))
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            return np.stack([p[:, 1], p[:, 0]], axis=1)  # column 1 = outcome 1 = good

        def predict(self, df: pd.DataFrame) -> np.ndarray:
            return np.argmax(self.predict_proba(df), axis=1)

    wrapped = Wrapped()
    dice_data = dice_ml.Data(dataframe=frame, continuous_features=numeric,
                             outcome_name="outcome")
    dice_model = dice_ml.Model(model=wrapped, backend="sklearn")
    rejected = [i for i in models.test
                if int(np.argmax(model.adapter.predict(data.X[i : i + 1])[0])) == 1]
    queries = rejected[: 3 if args.quick else 20]

    def ranges(row: dict[str, Any]) -> dict[str, list[float]]:
        out = {}
        for n in numeric:
            spec = schema.feature(n)
            low, high = float(frame[n].min()), float(frame[n].max())
            if spec.monotone == "increasing":
                high = float(row[n])
            elif spec.monotone == "decreasing":
                low = float(row[n])
            out[n] = [low, max(low, high)]
        return {n: r for n, r in out.items() if n in mutable}

    def distance(a: dict[str, Any], b: dict[str, Any]) -> float:
        return sum(abs(float(a[n]) - float(b[n])) / std[n] if n in std else float(a[n] != b[n])
                   for n in schema.names)

    def changed(orig: dict[str, Any], cf: dict[str, Any]) -> list[str]:
        return [n for n in schema.names
                if (abs(float(cf[n]) - float(orig[n])) > 1e-9 if n in std else cf[n] != orig[n])]

    def feasible(orig: dict[str, Any], cf: dict[str, Any], allowed: dict[str, list[float]]
                 ) -> bool:
        for n in changed(orig, cf):
            if n not in mutable:
                if args.quick:
                    print(f"    (infeasible: {n} changed {orig[n]} -> {cf[n]})")
                return False
            if n in allowed and not allowed[n][0] - 1e-9 <= float(cf[n]) <= allowed[n][1] + 1e-9:
                if args.quick:
                    print(f"    (infeasible: {n} = {cf[n]} outside {allowed[n]})")
                return False
        return True

    def approved(cf: dict[str, Any]) -> bool:
        return int(np.argmax(model.adapter.predict(schema.encode(cf))[0])) == 0

    def summarise(name: str, results: list[tuple[dict[str, Any], list[dict[str, Any]],
                                                 float]]) -> None:
        valid, feas, prox, spars, div, times, any_valid = [], [], [], [], [], [], 0
        for orig, cfs, seconds in results:
            times.append(seconds)
            allowed = ranges(orig)
            oks = [approved(c) for c in cfs]
            any_valid += any(oks)
            valid += oks
            feas += [feasible(orig, c, allowed) for c in cfs]
            prox += [distance(orig, c) for c in cfs]
            spars += [len(changed(orig, c)) for c in cfs]
            pairs = [distance(a, b) for a, b in itertools.combinations(cfs, 2)]
            if pairs:
                div.append(statistics.mean(pairs))
        mean = lambda v: statistics.mean(v) if v else float("nan")  # noqa: E731
        print(f"  {name:<16} {any_valid / len(results):>8.0%} {mean(valid):>9.0%} "
              f"{mean(feas):>12.0%} {mean(prox):>10.2f} {mean(spars):>9.2f} "
              f"{mean(div):>10.2f} {statistics.median(times) * 1e3:>9.0f} ms")

    ours = []
    for i in queries:
        row = data.rows[i]
        t0 = time.perf_counter()
        result = find_counterfactuals(model, row, desired_class="good", data=train, k=3)
        ours.append((dict(row), [dict(o.row) for o in result.options],
                     time.perf_counter() - t0))
    peers: dict[str, list[tuple[dict[str, Any], list[dict[str, Any]], float]]] = {}
    for method in ("random", "genetic"):
        explainer = dice_ml.Dice(dice_data, dice_model, method=method)
        out = []
        for i in queries:
            row = dict(data.rows[i])
            query = pd.DataFrame([row])
            t0 = time.perf_counter()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    res = explainer.generate_counterfactuals(
                        query, total_CFs=3, desired_class="opposite",
                        features_to_vary=mutable, permitted_range=ranges(row),
                        random_seed=0, verbose=False) if method == "random" else \
                        explainer.generate_counterfactuals(
                            query, total_CFs=3, desired_class="opposite",
                            features_to_vary=mutable, permitted_range=ranges(row),
                            verbose=False)
                found = res.cf_examples_list[0].final_cfs_df
                cfs = [] if found is None else found.drop(columns=["outcome"]).to_dict(
                    "records")
            except Exception as exc:
                cfs = []
                print(f"    DiCE {method} on applicant {i}: {type(exc).__name__}")
            for c in cfs:
                for n in numeric:
                    c[n] = float(c[n])
            out.append((row, cfs, time.perf_counter() - t0))
        peers[f"DiCE {method}"] = out
    print(f"Counterfactuals, German credit MLP, {len(queries)} rejected applicants, k=3 "
          f"({versions()}, dice-ml {importlib.metadata.version('dice-ml')})")
    print(f"  {'method':<16} {'any valid':>8} {'validity':>9} {'feasibility':>12} "
          f"{'proximity':>10} {'sparsity':>9} {'diversity':>10} {'time':>12}")
    summarise("ours", ours)
    for name, results in peers.items():
        summarise(name, results)


if __name__ == "__main__":
    main()
