"""Gradient-boosted trees from their own file formats: XGBoost (JSON, UBJSON) and
LightGBM (text). Both are data formats: loading one runs no code of the file's author."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from xai_sandbox.errors import UnsupportedModelError
from xai_sandbox.models.adapters import SklearnAdapter, model_errors

__all__ = ["BoosterAdapter", "load_lightgbm", "load_xgboost"]


def _first_line(exc: BaseException) -> str:
    """The first line of a native library's message, without its log prefix, source file
    or stack trace (never shown to a client)."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    first = re.sub(r"^\[[\d:]+\] \S+:\d+: ", "", first)
    return re.sub(r"(/[\w.-]+)+", "<path>", first)[:200]


def load_xgboost(path: Path, sha256: str) -> SklearnAdapter:
    """An XGBoost model from ``.json`` or ``.ubj``: a classifier unless its objective is a
    regression one."""
    import xgboost

    booster = xgboost.Booster()
    try:
        booster.load_model(str(path))
    except xgboost.core.XGBoostError as exc:
        raise UnsupportedModelError("model", f"must be a loadable XGBoost model "
                                    f"({_first_line(exc)})", path.name) from exc
    objective = str(booster.attr("objective") or _objective(booster))
    est: Any = (xgboost.XGBRegressor() if objective.startswith(("reg:", "count:", "survival:"))
                else xgboost.XGBClassifier())
    est.load_model(str(path))
    adapter = SklearnAdapter(est, n_features=booster.num_features())
    adapter.source_sha256 = sha256
    return adapter


def _objective(booster: Any) -> str:
    import json

    config = json.loads(booster.save_config())
    name: str = config["learner"]["objective"]["name"]
    return name


class BoosterAdapter(SklearnAdapter):
    """A LightGBM ``Booster`` read from its text model.

    A binary objective's output is the probability of class 1; :meth:`predict` gives both
    classes' probabilities, a multiclass one's are the softmax it already returns, a
    regression's the value (``output_space="output"``). TreeSHAP explains the raw score
    (:meth:`SklearnAdapter.predict_margin`).
    """

    def __init__(self, booster: Any, sha256: str) -> None:
        objective = str(booster.params.get("objective", "")) or _lgb_objective(booster)
        self.objective = objective
        self.n_classes = int(booster.params.get("num_class", 1) or 1)
        super().__init__(booster, n_features=booster.num_feature())
        self.output_space = ("probability" if objective.startswith(
            ("binary", "multiclass", "softmax", "cross_entropy", "multiclassova"))
            else "output")
        self.source_sha256 = sha256

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = self.validate_inputs(X, "X")
        with model_errors(X.shape):
            out = np.asarray(self.estimator.predict(X), dtype=np.float64)
        if out.ndim == 1 and self.output_space == "probability":
            return np.stack([1.0 - out, out], axis=1)
        return out[:, None] if out.ndim == 1 else out


def _lgb_objective(booster: Any) -> str:
    for line in booster.model_to_string(num_iteration=0).splitlines()[:40]:
        if line.startswith("objective="):
            return str(line.split("=", 1)[1].split()[0])
    return ""


def load_lightgbm(path: Path, sha256: str) -> BoosterAdapter:
    """A LightGBM model from its text format."""
    import lightgbm

    try:
        booster = lightgbm.Booster(model_file=str(path))
    except lightgbm.basic.LightGBMError as exc:
        raise UnsupportedModelError("model", f"must be a loadable LightGBM text model "
                                    f"({_first_line(exc)})", path.name) from exc
    return BoosterAdapter(booster, sha256)
