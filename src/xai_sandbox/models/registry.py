"""Registered models: an adapter plus identity, version, fingerprint, task and schema."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from xai_sandbox.errors import InvalidInputError, InvalidTargetError
from xai_sandbox.models.adapters import ModelAdapter, wrap
from xai_sandbox.models.profile import TrainingProfile, fit_profile
from xai_sandbox.models.schema import FeatureSchema

__all__ = ["ModelRegistry", "RegisteredModel", "register"]

Task = Literal["classification", "regression"]
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class RegisteredModel:
    """A model ready to be explained and recorded.

    ``reference`` is the default baseline (a typical valid row for tabular models);
    ``background`` rows, where given, are what Shapley methods average over.
    """

    model_id: str
    version: str
    adapter: ModelAdapter
    task: Task
    class_names: tuple[str, ...]
    fingerprint: str
    schema: FeatureSchema | None = None
    reference: np.ndarray | None = field(default=None, repr=False)
    background: np.ndarray | None = field(default=None, repr=False)
    profile: TrainingProfile | None = field(default=None, repr=False)

    @property
    def identity(self) -> dict[str, str]:
        return {"model_id": self.model_id, "version": self.version,
                "fingerprint": self.fingerprint}

    def probabilities(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities of encoded rows: the model's own where it gives them, else
        the softmax of its outputs (logits)."""
        out = self.adapter.predict(X)
        if self.adapter.output_space == "probability":
            return out
        shifted = np.exp(out - out.max(axis=1, keepdims=True))
        result: np.ndarray = shifted / shifted.sum(axis=1, keepdims=True)
        return result

    def class_index(self, target: int | str) -> int:
        """Index of a class given by index or by name."""
        if isinstance(target, str):
            if target not in self.class_names:
                raise InvalidTargetError("target", f"must be a class of {list(self.class_names)}",
                                        target)
            return self.class_names.index(target)
        return int(target)


def register(model: Any, *, model_id: str, version: str, task: Task = "classification",
             class_names: Sequence[str] = (), schema: FeatureSchema | None = None,
             reference: np.ndarray | None = None, background: np.ndarray | None = None,
             training_data: np.ndarray | None = None,
             **adapter_options: Any) -> RegisteredModel:
    """Wrap ``model`` and give it an identity; computes its fingerprint once.

    ``training_data`` (encoded tabular rows) is summarised into a
    :class:`~xai_sandbox.models.profile.TrainingProfile` for out-of-distribution checks;
    the rows themselves are not kept.
    """
    if not isinstance(model_id, str) or not _ID.match(model_id):
        raise InvalidInputError("model_id", "must be 1-128 of letters, digits, '.', '_', '-'",
                                model_id)
    if not isinstance(version, str) or not _ID.match(version):
        raise InvalidInputError("version", "must be 1-128 of letters, digits, '.', '_', '-'",
                                version)
    if task not in ("classification", "regression"):
        raise InvalidInputError("task", "must be 'classification' or 'regression'", task)
    if task == "classification" and len(class_names) < 2:
        raise InvalidInputError("class_names", "a classifier needs at least two class names",
                                list(class_names))
    adapter = wrap(model, **adapter_options)
    if schema is not None:
        if adapter.input_kind != "tabular":
            raise InvalidInputError("schema", "only tabular models take a feature schema",
                                    adapter.input_kind)
        adapter.sample_shape = adapter.sample_shape or (len(schema.columns),)
        if adapter.sample_shape != (len(schema.columns),):
            raise InvalidInputError("schema", f"must describe the model's "
                                    f"{adapter.sample_shape[0]} columns",
                                    len(schema.columns))
    ref = None if reference is None else adapter.validate_inputs(reference, "reference")
    bg = None if background is None else adapter.validate_inputs(background, "background")
    profile = None
    if training_data is not None:
        if adapter.input_kind != "tabular":
            raise InvalidInputError("training_data", "profiles are kept for tabular models",
                                    adapter.input_kind)
        rows = adapter.validate_inputs(training_data, "training_data")
        profile = fit_profile(rows, schema.columns if schema is not None else None)
    return RegisteredModel(model_id=model_id, version=version, adapter=adapter, task=task,
                           class_names=tuple(class_names), fingerprint=adapter.fingerprint(),
                           schema=schema, reference=ref, background=bg, profile=profile)


class ModelRegistry:
    """An in-memory registry keyed by (model id, version)."""

    def __init__(self) -> None:
        self._models: dict[tuple[str, str], RegisteredModel] = {}

    def add(self, model: RegisteredModel) -> RegisteredModel:
        key = (model.model_id, model.version)
        existing = self._models.get(key)
        if existing is not None and existing.fingerprint != model.fingerprint:
            raise InvalidInputError("version", "is already registered with other weights; "
                                    "register a new version", f"{key[0]}@{key[1]}")
        self._models[key] = model
        return model

    def get(self, model_id: str, version: str | None = None) -> RegisteredModel:
        if version is None:
            # The most recently registered version of that id.
            found = [m for (i, _), m in self._models.items() if i == model_id]
        else:
            found = [m for key, m in self._models.items() if key == (model_id, version)]
        if not found:
            known = sorted(f"{i}@{v}" for i, v in self._models)
            raise InvalidInputError("model_id", f"must be a registered model {known}",
                                    model_id if version is None else f"{model_id}@{version}")
        return found[-1]

    def __iter__(self) -> Iterator[RegisteredModel]:
        return iter(list(self._models.values()))

    def __len__(self) -> int:
        return len(self._models)
