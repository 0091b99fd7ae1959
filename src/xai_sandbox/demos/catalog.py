"""The built-in models the CLI and the demo can name."""

from __future__ import annotations

from collections.abc import Callable

from xai_sandbox.errors import InvalidInputError
from xai_sandbox.models.registry import RegisteredModel

__all__ = ["BUILTIN_MODELS", "builtin_model"]


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
