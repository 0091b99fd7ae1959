"""SHA-256 fingerprints of model weights and parameters, stable across processes."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import torch

__all__ = ["fingerprint_estimator", "fingerprint_module"]


def _update_array(h: Any, name: str, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array)
    header = json.dumps([name, array.dtype.str, list(array.shape)])
    h.update(header.encode())
    if array.dtype.kind == "O":
        h.update(json.dumps([repr(v) for v in array.ravel()]).encode())
    else:
        h.update(array.tobytes())


def fingerprint_module(module: torch.nn.Module) -> str:
    """SHA-256 over every parameter and buffer: its name, dtype, shape and bytes."""
    h = hashlib.sha256(b"xai-sandbox/torch/1\n")
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        header = json.dumps([name, str(t.dtype), list(t.shape)])
        h.update(header.encode())
        # A bytes view works for every dtype, bfloat16 included.
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _walk(h: Any, name: str, value: Any, depth: int = 0) -> None:
    if depth > 8:
        return
    if isinstance(value, np.ndarray):
        _update_array(h, name, value)
    elif isinstance(value, bool | int | float | str | type(None)):
        h.update(json.dumps([name, repr(value)]).encode())
    elif isinstance(value, list | tuple):
        h.update(json.dumps([name, type(value).__name__, len(value)]).encode())
        for i, item in enumerate(value):
            _walk(h, f"{name}[{i}]", item, depth + 1)
    elif isinstance(value, dict):
        for key in sorted(value, key=repr):
            _walk(h, f"{name}[{key!r}]", value[key], depth + 1)
    elif hasattr(value, "get_params"):
        _hash_sklearn(h, name, value, depth + 1)
    elif hasattr(value, "__getstate__") and hasattr(value, "__dict__"):
        # Fitted helper objects (trees, binners): hash their state.
        _walk(h, f"{name}:{type(value).__qualname__}", dict(vars(value)), depth + 1)
    else:
        h.update(json.dumps([name, type(value).__qualname__]).encode())


def _hash_sklearn(h: Any, name: str, est: Any, depth: int) -> None:
    h.update(json.dumps([name, type(est).__module__, type(est).__qualname__]).encode())
    _walk(h, f"{name}.params", est.get_params(deep=False), depth)
    learned = {k: v for k, v in vars(est).items() if k.endswith("_") and not k.startswith("_")}
    _walk(h, f"{name}.learned", learned, depth)
    tree = getattr(est, "tree_", None)  # sklearn's Cython Tree: hash its arrays
    if tree is not None:
        for attr in ("children_left", "children_right", "feature", "threshold", "value"):
            _update_array(h, f"{name}.tree_.{attr}", np.asarray(getattr(tree, attr)))


def fingerprint_estimator(est: Any) -> str:
    """SHA-256 of a fitted scikit-learn-API estimator's parameters and learned state.

    LightGBM and XGBoost models are hashed through their own deterministic text dumps.
    """
    module = type(est).__module__
    if module.startswith("lightgbm"):
        h = hashlib.sha256(b"xai-sandbox/lightgbm/1\n")
        h.update(est.booster_.model_to_string().encode())
        return h.hexdigest()
    if module.startswith("xgboost"):
        h = hashlib.sha256(b"xai-sandbox/xgboost/1\n")
        h.update(bytes(est.get_booster().save_raw("json")))
        return h.hexdigest()
    h = hashlib.sha256(b"xai-sandbox/sklearn/1\n")
    _hash_sklearn(h, "estimator", est, 0)
    return h.hexdigest()
