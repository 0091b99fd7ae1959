"""What :func:`~xai_sandbox.explainers.base.explain` makes of its arguments before a method
runs: the target, the baselines, custom feature groups, and where the method runs (the
device, the precision and the memory budget of its passes)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from xai_sandbox.errors import InvalidInputError, InvalidTargetError
from xai_sandbox.models.accelerator import Batcher, parse_precision, resolve_device
from xai_sandbox.models.adapters import ModelAdapter, TorchAdapter
from xai_sandbox.models.registry import RegisteredModel
from xai_sandbox.models.schema import FeatureSchema

__all__ = ["custom_groups", "place", "resolve_baselines", "resolve_target"]


def place(adapter: ModelAdapter, device: Any, dtype: Any, memory_budget: int | None,
          mixed_precision: bool, method: str) -> tuple[ModelAdapter, Batcher, Any]:
    """The adapter on the device the method runs on, its batcher and its autocast dtype.

    ``device=None`` keeps a torch model where it is; a model that is not torch runs on the
    CPU and refuses another device. ``dtype`` (``"float16"``, ``"bfloat16"``) is taken only
    by a method that guards its sums (``mixed_precision``); ``"float32"`` means none.
    """
    precision = parse_precision(dtype)
    if precision is not None and not mixed_precision:
        raise InvalidInputError("dtype", f"{method} runs in float32 only; mixed precision "
                                "is offered by integrated_gradients (and smoothgrad over "
                                "it), which checks its completeness in float32", dtype)
    if isinstance(adapter, TorchAdapter):
        target = resolve_device(device, adapter.device)
        adapter = adapter.on(target)
    else:
        import torch

        target = resolve_device(device, torch.device("cpu"))
        if target.type != "cpu":
            raise InvalidInputError("device", f"a {type(adapter).__name__} model runs on the "
                                    "CPU; only torch models move to an accelerator", device)
        if precision is not None:
            raise InvalidInputError("dtype", "mixed precision needs a torch model", dtype)
    return adapter, Batcher.for_device(target, memory_budget), precision


def resolve_target(target: Any, prediction: np.ndarray, model: RegisteredModel | None,
                    parameter: str = "target") -> np.ndarray:
    n, k = prediction.shape
    if target is None:
        return (np.argmax(prediction, axis=1) if k > 1 else np.zeros(n)).astype(np.int64)
    if isinstance(target, str):
        if model is None:
            raise InvalidTargetError(parameter, "a class name needs a registered model", target)
        target = model.class_index(target)
    arr = np.asarray(target)
    if arr.dtype.kind not in "iu" or arr.ndim > 1 or (arr.ndim == 1 and arr.shape[0] != n):
        raise InvalidTargetError(parameter, f"must be an integer class index in [0, {k}) or one "
                                 f"per row ({n})", target)
    if ((arr < 0) | (arr >= k)).any():
        raise InvalidTargetError(parameter, f"must be in [0, {k}) for a model with {k} outputs",
                                 target)
    return np.broadcast_to(arr, (n,)).astype(np.int64)


def resolve_baselines(adapter: ModelAdapter, inputs: np.ndarray, baselines: Any,
                       model: RegisteredModel | None) -> np.ndarray:
    if baselines is None and model is not None and model.reference is not None:
        baselines = model.reference
    if baselines is None:
        return np.zeros((1, *inputs.shape[1:]), dtype=inputs.dtype)
    if isinstance(baselines, int | float) and not isinstance(baselines, bool):
        return np.full((1, *inputs.shape[1:]), baselines, dtype=inputs.dtype)
    base = adapter.validate_inputs(baselines, "baselines")
    if base.shape[0] not in (1, inputs.shape[0]):
        raise InvalidInputError("baselines", f"must have 1 or {inputs.shape[0]} rows",
                                f"{base.shape[0]} rows")
    return base


def custom_groups(groups: Mapping[str, Sequence[str]], schema: FeatureSchema | None,
                   columns: tuple[str, ...] | None
                   ) -> tuple[tuple[tuple[int, ...], ...], tuple[str, ...]]:
    """Column indices of each named group of features (or of columns)."""
    if not isinstance(groups, Mapping) or not groups:
        raise InvalidInputError("groups", "must be a non-empty mapping of name to features",
                                groups)
    if schema is not None:
        members = dict(zip(schema.names, schema.groups, strict=True))
    elif columns is not None:
        members = {c: (i,) for i, c in enumerate(columns)}
    else:
        raise InvalidInputError("groups", "needs a schema or feature_names to resolve names",
                                sorted(groups))
    seen: list[str] = []
    out = []
    for name, items in groups.items():
        if isinstance(items, str) or not isinstance(items, Sequence) or not items:
            raise InvalidInputError(f"groups[{name!r}]", "must be a non-empty list of names",
                                    items)
        unknown = [i for i in items if i not in members]
        if unknown:
            raise InvalidInputError(f"groups[{name!r}]", f"must name features of "
                                    f"{sorted(members)}", unknown)
        seen.extend(items)
        out.append(tuple(c for item in items for c in members[item]))
    if sorted(seen) != sorted(members):
        missing = sorted(set(members) - set(seen))
        repeated = sorted({s for s in seen if seen.count(s) > 1})
        raise InvalidInputError("groups", "must cover every feature exactly once",
                                {"missing": missing, "repeated": repeated})
    return tuple(out), tuple(str(k) for k in groups)
