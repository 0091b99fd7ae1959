"""The built-in models the CLI and the demo can name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from xai_sandbox.errors import InvalidInputError
from xai_sandbox.models.registry import RegisteredModel

__all__ = ["BUILTIN_MODELS", "HeldOut", "builtin_model", "held_out"]


def _mlp() -> RegisteredModel:
    from xai_sandbox.demos.credit import credit_models

    return credit_models().mlp


def _lightgbm() -> RegisteredModel:
    from xai_sandbox.demos.credit import credit_models

    return credit_models().lightgbm


def _efficientnet() -> RegisteredModel:
    from xai_sandbox.demos.images import efficientnet_lite0

    return efficientnet_lite0()


BUILTIN_MODELS: dict[str, Callable[[], RegisteredModel]] = {
    "german-credit-mlp": _mlp,
    "german-credit-lightgbm": _lightgbm,
    "efficientnet-lite0": _efficientnet,
}


def builtin_model(name: str) -> RegisteredModel:
    if name not in BUILTIN_MODELS:
        raise InvalidInputError("model", f"must be one of {sorted(BUILTIN_MODELS)}", name)
    return BUILTIN_MODELS[name]()


@dataclass(frozen=True)
class HeldOut:
    """A built-in model with a sample it was not trained on, for the release gate."""

    model: RegisteredModel
    rows: np.ndarray
    training: tuple[np.ndarray, np.ndarray] | None
    methods: tuple[str, ...]


def held_out(name: str, rows: int = 30) -> HeldOut:
    """The first ``rows`` rows of a built-in model's held-out split (German credit: the
    20% test split; EfficientNet-Lite0: the shipped photos), with its labelled training
    rows where the data-randomisation test needs them."""
    if not isinstance(rows, int) or isinstance(rows, bool) or rows < 2:
        raise InvalidInputError("rows", "must be an integer of at least 2", rows)
    if name == "efficientnet-lite0":
        from xai_sandbox.demos.images import PHOTOS, load_photo, preprocess

        photos = np.concatenate([preprocess(load_photo(p)) for p in PHOTOS[:rows]])
        return HeldOut(builtin_model(name), photos, None, ("grad_cam_pp",))
    model = builtin_model(name)
    from xai_sandbox.demos.credit import credit_models

    data = credit_models()
    methods = ("tree_shap",) if name == "german-credit-lightgbm" else (
        "integrated_gradients", "gradient_x_input")
    return HeldOut(model, data.data.X[data.test[:rows]],
                   (data.data.X[data.train], data.data.y[data.train]), methods)
