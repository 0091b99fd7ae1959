"""Counterfactuals on German credit: ours vs DiCE (random and genetic), same constraints.

Each method gets the same rejected applicants, the same model (the MLP, approval = class
'good'), the same mutable features (never protected ones) and, per applicant, the same
permitted values: our ActionConstraints (training 1st-99th percentile, at most 50% change
from the current value, only the risk-reducing side of a monotone feature, and only up the
order of checking account and savings). "ours, no limits" is the search without training
data (schema bounds and monotone rules only), for reference. Every counterfactual returned
is re-scored by the model. Reported per method: share of applicants with at least one
valid option, validity (share of options that flip), feasibility (share that respect every
constraint), plausibility (mean standardised distance from each counterfactual to its 5
nearest real training applicants with a good outcome; lower is more plausible), its OOD
score (1.0 = the training rows' 99th percentile) and the share of options above the OOD
limit, proximity (numeric change over the feature's standard deviation, plus 1 per changed
category; lower is closer), sparsity (features changed), diversity (mean pairwise distance
between one applicant's options), the median time per applicant and its ratio to ours.
The methods run alternating, applicant by applicant, after one warm-up call each.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import itertools
import os
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from _common import parse, versions
from xai_sandbox.counterfactuals import (
    ActionConstraints,
    find_counterfactuals,
    neighbour_distance,
    ood_scores,
)
from xai_sandbox.counterfactuals.plausibility import column_weights
from xai_sandbox.demos.credit import credit_models

ORDER = {"checking_status": ["A11", "A12", "A13"], "savings": ["A61", "A62", "A63", "A64"]}
Result = tuple[dict[str, Any], list[dict[str, Any]], float]   # applicant, options, seconds


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def main() -> None:
    args = parse(__doc__ or "")
    os.environ.setdefault("TQDM_DISABLE", "1")  # DiCE draws a progress bar per query
    import dice_ml

    print(f"before: {load()}")
    models = credit_models()
    data, model, schema = models.data, models.mlp, models.data.schema
    train = data.X[models.train]
    good = model.class_index("good")
    constraints = ActionConstraints.from_training(train, schema, outcomes=data.y[models.train],
                                                  category_order=ORDER, profile=model.profile)
    frame = pd.DataFrame([data.rows[i] for i in models.train])
    frame["outcome"] = 1 - data.y[models.train]  # 1 = good, DiCE flips towards it
    numeric = [f.name for f in schema.features if f.kind == "numeric"]
    mutable = [f.name for f in schema.features if f.mutable and not f.protected]
    std = {n: float(frame[n].std()) or 1.0 for n in numeric}
    weights = column_weights(schema, constraints.scale)
    approved_rows = train[data.y[models.train] == good]

    class Wrapped:
        """The registered MLP as DiCE sees a scikit-learn classifier: P(good), P(bad)->1-."""

        def predict_proba(self, df: pd.DataFrame) -> np.ndarray:
            rows = df[list(schema.names)].to_dict("records")
            inside = np.ones(len(rows), dtype=bool)
            for j, r in enumerate(rows):
                for n in numeric:
                    r[n] = float(r[n])
                    bounds = schema.feature(n).bounds
                    if bounds is not None and not bounds[0] <= r[n] <= bounds[1]:
                        inside[j] = False   # DiCE random can step past a bound
            p = np.zeros((len(rows), 2))
            p[:, 1 - good] = 1.0   # a row outside the schema's bounds is never approved
            if inside.any():
                p[inside] = model.probabilities(schema.encode(
                    [r for r, ok in zip(rows, inside, strict=True) if ok]))
            return np.stack([p[:, 1 - good], p[:, good]], axis=1)  # column 1 = good

        def predict(self, df: pd.DataFrame) -> np.ndarray:
            return np.argmax(self.predict_proba(df), axis=1)

    dice_data = dice_ml.Data(dataframe=frame, continuous_features=numeric,
                             outcome_name="outcome")
    dice_model = dice_ml.Model(model=Wrapped(), backend="sklearn")
    rejected = [i for i in models.test
                if int(np.argmax(model.probabilities(data.X[i : i + 1])[0])) != good]
    queries = rejected[: 3 if args.quick else 30]

    def permitted(row: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
        """The features DiCE may vary for this applicant and their permitted values: the
        same as ours."""
        vary, ranges = [], {}
        for n in mutable:
            spec = schema.feature(n)
            if spec.kind == "numeric":
                low, high = constraints.numeric_range(spec, float(row[n]))
                if low < high or (low == high and low != row[n]):
                    vary.append(n)
                    ranges[n] = [low, high]
            else:
                allowed = [c for c in spec.category_codes()
                           if constraints.category_allowed(n, row[n], c)]
                if allowed:
                    vary.append(n)
                    ranges[n] = [row[n], *allowed]
        return vary, ranges

    def distance(a: dict[str, Any], b: dict[str, Any]) -> float:
        return sum(abs(float(a[n]) - float(b[n])) / std[n] if n in std else float(a[n] != b[n])
                   for n in schema.names)

    def changed(orig: dict[str, Any], cf: dict[str, Any]) -> list[str]:
        return [n for n in schema.names
                if (abs(float(cf[n]) - float(orig[n])) > 1e-9 if n in std else cf[n] != orig[n])]

    def feasible(orig: dict[str, Any], cf: dict[str, Any]) -> bool:
        for n in changed(orig, cf):
            spec = schema.feature(n)
            if n not in mutable:
                return False
            if spec.kind == "numeric":
                low, high = constraints.numeric_range(spec, float(orig[n]))
                if not low - 1e-9 <= float(cf[n]) <= high + 1e-9:
                    return False
            elif not constraints.category_allowed(n, orig[n], cf[n]):
                return False
        return True

    def approved(cf: dict[str, Any]) -> bool:
        return bool(Wrapped().predict(pd.DataFrame([cf]))[0] == 1)

    def ours(row: dict[str, Any]) -> list[dict[str, Any]]:
        result = find_counterfactuals(model, row, desired_class="good", k=3,
                                      constraints=constraints)
        return [dict(o.row) for o in result.options]

    def ours_free(row: dict[str, Any]) -> list[dict[str, Any]]:
        result = find_counterfactuals(model, row, desired_class="good", k=3)
        return [dict(o.row) for o in result.options]

    def dice(method: str) -> Callable[[dict[str, Any]], list[dict[str, Any]]]:
        explainer = dice_ml.Dice(dice_data, dice_model, method=method)

        def run(row: dict[str, Any]) -> list[dict[str, Any]]:
            vary, ranges = permitted(row)
            if not vary:
                return []
            extra = {"random_seed": 0} if method == "random" else {}
            try:
                with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
                    warnings.simplefilter("ignore")
                    res = explainer.generate_counterfactuals(
                        pd.DataFrame([row]), total_CFs=3, desired_class="opposite",
                        features_to_vary=vary, permitted_range=ranges, verbose=False,
                        **extra)
            except Exception as exc:  # DiCE raises bare exceptions when it finds nothing
                print(f"    DiCE {method}: {type(exc).__name__}: {str(exc)[:80]}")
                return []
            found = res.cf_examples_list[0].final_cfs_df
            cfs = [] if found is None else found.drop(columns=["outcome"]).to_dict("records")
            for c in cfs:
                for n in numeric:
                    c[n] = float(c[n])
            return list(cfs)

        return run

    methods = {"ours": ours, "ours, no limits": ours_free, "DiCE random": dice("random"),
               "DiCE genetic": dice("genetic")}
    results: dict[str, list[Result]] = {name: [] for name in methods}
    for fn in methods.values():   # warm-up, untimed
        fn(dict(data.rows[queries[0]]))
    for n, i in enumerate(queries):   # alternate, starting with a different method each time
        names = list(methods)
        for name in names[n % len(names):] + names[: n % len(names)]:
            row = dict(data.rows[i])
            t0 = time.perf_counter()
            cfs = methods[name](row)
            results[name].append((row, cfs, time.perf_counter() - t0))

    def summarise(name: str, rows: list[Result], reference: float) -> None:
        valid, feas, near, ood, beyond, prox, spars, div, times = ([] for _ in range(9))
        any_valid = 0
        for orig, cfs, seconds in rows:
            times.append(seconds)
            oks = [approved(c) for c in cfs]
            any_valid += any(oks)
            valid += oks
            feas += [feasible(orig, c) for c in cfs]
            prox += [distance(orig, c) for c in cfs]
            spars += [len(changed(orig, c)) for c in cfs]
            scorable = [c for c in cfs if all(
                (b := schema.feature(n).bounds) is None or b[0] <= float(c[n]) <= b[1]
                for n in numeric)]   # (a row outside the bounds counts as infeasible)
            if scorable:
                X = schema.encode(scorable)
                near += [float(d) for d in neighbour_distance(X, approved_rows, weights, 5)]
                scores = ood_scores(model.profile, X)
                limit = max(1.0, float(ood_scores(model.profile, schema.encode(orig))[0]))
                ood += [float(s) for s in scores]
                beyond += [float(s > limit) for s in scores]
            pairs = [distance(a, b) for a, b in itertools.combinations(cfs, 2)]
            if pairs:
                div.append(statistics.mean(pairs))
        mean = lambda v: statistics.mean(v) if v else float("nan")  # noqa: E731
        median = statistics.median(times)
        print(f"  {name:<16} {len(valid) / len(rows):>5.1f} {any_valid / len(rows):>6.0%} "
              f"{mean(valid):>6.0%} {mean(feas):>6.0%} {mean(near):>8.2f} {mean(ood):>6.2f} "
              f"{mean(beyond):>6.0%} {mean(prox):>6.2f} {mean(spars):>6.2f} {mean(div):>6.2f} "
              f"{median * 1e3:>7.0f} ms {median / reference:>6.1f}x")

    print(f"Counterfactuals, German credit MLP, {len(queries)} rejected applicants, k=3 "
          f"({versions()}, dice-ml {importlib.metadata.version('dice-ml')})")
    print(f"  {'method':<16} {'opts':>5} {'any':>6} {'valid':>6} {'feas.':>6} "
          f"{'plaus.':>8} {'OOD':>6} {'>OOD':>6} {'prox.':>6} {'spars.':>6} {'div.':>6} "
          f"{'median':>10} {'ratio':>7}")
    base = statistics.median(t for _, _, t in results["ours"])
    for name, rows in results.items():
        summarise(name, rows, base)
    print("  opts: options per applicant; any: applicants with a valid option; plaus.: mean "
          "distance to the 5 nearest good training applicants (lower is more plausible); "
          ">OOD: options above the OOD limit; ratio: median time over ours")
    print(f"after: {load()}")


if __name__ == "__main__":
    main()
