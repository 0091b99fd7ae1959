"""Models that do not read the schema's encoded columns directly.

The project's input space for a tabular model is always the schema's encoded columns: one
one-hot column per category, numbers in raw units. Every explainer, counterfactual and
reason works there. Two kinds of model expect something else, and an adapter here puts the
translation in front of them, so that nothing downstream changes:

- :class:`FrameAdapter`: a fitted scikit-learn estimator or ``Pipeline`` that was fitted on
  a pandas ``DataFrame`` of the *raw* features (``ColumnTransformer`` with
  ``OneHotEncoder`` and ``StandardScaler``, then a classifier). Each batch of encoded rows
  is decoded, vectorised (one ``argmax`` per one-hot group), into such a frame.
- :class:`ScaledTorchAdapter` and :class:`ScaledAdapter`: a network (torch, ONNX) trained
  on standardised inputs, with the scaling declared in the schema (a numeric feature's
  ``encoding: {center, scale}``). For torch the scaling is a ``torch.nn.Module`` in front
  of the network, so gradient methods still run; their attributions are in raw units and
  integrated gradients' completeness still holds (the explained function is the composite).

Attributions are then summed per raw feature as for any schema (the one-hot columns of a
feature play as one), so neither the report nor the subject ever sees a column of the
model's own encoding.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from xai_sandbox.errors import InvalidInputError, SchemaError, UnsupportedModelError
from xai_sandbox.models.adapters import ModelAdapter, SklearnAdapter, TorchAdapter, model_errors
from xai_sandbox.models.fingerprint import fingerprint_estimator
from xai_sandbox.models.schema import FeatureSchema

__all__ = ["FrameAdapter", "ScaledAdapter", "ScaledTorchAdapter", "needs_frame", "scaled"]


def needs_frame(estimator: Any, schema: FeatureSchema) -> bool:
    """Whether ``estimator`` was fitted on a ``DataFrame`` of the schema's raw features.

    ``True`` when its ``feature_names_in_`` are the schema's feature names (in any order:
    the frame is built in the estimator's); ``False`` when it takes the encoded columns
    directly (fitted on an array of ``len(schema.columns)`` columns, or on a frame whose
    columns are the encoded names ``feature=code``).

    Raises
    ------
    SchemaError
        When the names are neither, naming the missing and the extra columns; or when an
        estimator fitted on an array has another number of columns than the encoding.
    """
    names = getattr(estimator, "feature_names_in_", None)
    if names is None:
        n = getattr(estimator, "n_features_in_", None)
        if n is not None and int(n) != len(schema.columns):
            raise SchemaError("estimator.n_features_in_", f"must be the schema's "
                              f"{len(schema.columns)} encoded columns (or fit the estimator "
                              "on a DataFrame of the raw features)", int(n))
        return False
    got = [str(c) for c in names]
    if sorted(got) == sorted(schema.names):
        return True
    if got == list(schema.columns):
        return False
    missing = [c for c in schema.names if c not in got]
    extra = [c for c in got if c not in schema.names]
    raise SchemaError("estimator.feature_names_in_", "must be the schema's feature names "
                      f"(missing: {missing}, extra: {extra})", got)


class FrameAdapter(SklearnAdapter):
    """A fitted scikit-learn estimator or ``Pipeline`` fitted on raw feature frames.

    It takes the schema's encoded columns (what every explainer perturbs) and hands the
    estimator a ``DataFrame`` of raw features: numbers as floats, categories as their codes
    (strings), columns in the order the estimator was fitted with. A perturbed one-hot
    group that is not exactly one-hot (a blend of baselines) decodes to its largest column,
    as :meth:`FeatureSchema.decode` does.

    Parameters
    ----------
    estimator:
        The fitted estimator; :func:`needs_frame` must hold for it.
    schema:
        The feature schema of its raw features.
    fingerprint:
        The fingerprint to report instead of the estimator's own (a loader passes the
        SHA-256 of the model file's bytes).

    Tree ensembles inside a pipeline see transformed columns, not the schema's: TreeSHAP
    is not offered (``is_tree_ensemble`` is ``False``); the Shapley methods that evaluate
    the model (exact, kernel, permutation) are.
    """

    def __init__(self, estimator: Any, schema: FeatureSchema, *,
                 fingerprint: str | None = None) -> None:
        if not isinstance(schema, FeatureSchema):
            raise InvalidInputError("schema", "must be a FeatureSchema", type(schema).__name__)
        if fingerprint is not None and (not isinstance(fingerprint, str) or len(
                fingerprint) != 64 or any(c not in "0123456789abcdef" for c in fingerprint)):
            raise InvalidInputError("fingerprint", "must be a SHA-256 hex digest (64 lowercase "
                                    "hex digits)", fingerprint)
        super().__init__(estimator, n_features=len(schema.columns))
        if not needs_frame(estimator, schema):
            raise UnsupportedModelError("estimator", "must be fitted on a DataFrame of the "
                                        "schema's raw features (this one takes the encoded "
                                        "columns: use SklearnAdapter)", type(estimator).__name__)
        self.schema = schema
        self.order = tuple(str(c) for c in estimator.feature_names_in_)
        self._fingerprint = fingerprint
        # Per categorical feature: its column indices and its codes, for the argmax.
        self._decoders = {spec.name: (np.asarray(cols), np.asarray(spec.category_codes(),
                                                                   dtype=object))
                          for spec, cols in zip(schema.features, schema.groups, strict=True)
                          if spec.kind == "categorical"}
        self._numeric = {spec.name: cols[0] for spec, cols in
                         zip(schema.features, schema.groups, strict=True)
                         if spec.kind == "numeric"}

    @property
    def is_tree_ensemble(self) -> bool:
        return False

    def frame(self, X: np.ndarray) -> Any:
        """The raw-feature ``DataFrame`` of encoded rows ``X`` (no loop over rows)."""
        import pandas as pd  # type: ignore[import-untyped]  # installed with shap; no stubs

        X = np.asarray(X, dtype=np.float64)
        columns: dict[str, Any] = {}
        for name in self.order:
            if name in self._numeric:
                columns[name] = X[:, self._numeric[name]]
            else:
                cols, codes = self._decoders[name]
                columns[name] = codes[np.argmax(X[:, cols], axis=1)]
        return pd.DataFrame(columns, columns=list(self.order))

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = self.validate_inputs(X, "X")
        with model_errors(X.shape):
            frame = self.frame(X)
            fn = (self.estimator.predict_proba if self.output_space == "probability"
                  else self.estimator.predict)
            out = np.asarray(fn(frame), dtype=np.float64)
        return out[:, None] if out.ndim == 1 else out

    def predict_margin(self, X: np.ndarray) -> np.ndarray:
        raise UnsupportedModelError("model", "a pipeline over raw feature frames has no tree "
                                    "margin on the schema's columns", type(self.estimator)
                                    .__name__)

    def fingerprint(self) -> str:
        given = self._fingerprint or getattr(self, "source_sha256", None)
        return given if given is not None else fingerprint_estimator(self.estimator)


# ---------------------------------------------------------------------- scaled columns
def _affine(centers: Any, scales: Any, n: int | None) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(centers, dtype=np.float64)
    s = np.asarray(scales, dtype=np.float64)
    if c.ndim != 1 or s.shape != c.shape or (n is not None and c.shape[0] != n):
        raise InvalidInputError("centers", f"centers and scales must be two vectors of one "
                                f"value per column ({n if n is not None else 'equal length'})",
                                f"shapes {c.shape} and {s.shape}")
    if not (np.isfinite(c).all() and np.isfinite(s).all()):
        raise InvalidInputError("centers", "centers and scales must be finite", "non-finite")
    if not (s > 0).all():
        raise InvalidInputError("scales", "must all be greater than 0",
                                float(s[~(s > 0)][0]))
    return c, s


def _scaled_fingerprint(inner: str, centers: np.ndarray, scales: np.ndarray) -> str:
    h = hashlib.sha256(b"xai-sandbox/scaled/1\n")
    h.update(inner.encode())
    h.update(np.ascontiguousarray(centers).tobytes())
    h.update(np.ascontiguousarray(scales).tobytes())
    return h.hexdigest()


class Standardise(torch.nn.Module):
    """``(x - center) / scale`` per column, in the input's dtype; no parameters."""

    center: torch.Tensor
    scale: torch.Tensor

    def __init__(self, centers: np.ndarray, scales: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("center", torch.as_tensor(centers, dtype=torch.float64))
        self.register_buffer("scale", torch.as_tensor(scales, dtype=torch.float64))
        self.training = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.center.to(x)) / self.scale.to(x)


class _ScaledModule(torch.nn.Module):
    """The network with its standardisation in front: the function gradients see."""

    def __init__(self, scaling: Standardise, model: torch.nn.Module) -> None:
        super().__init__()
        self.scaling = scaling
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model(self.scaling(x))
        return out


class ScaledTorchAdapter(TorchAdapter):
    """A torch network trained on standardised columns, fed the schema's raw columns.

    Its module is ``scaling -> network``: gradient methods differentiate through the
    scaling, so their attributions are in raw units, and the network itself is never
    changed. The fingerprint covers the network's (or its file's) and the scaling.

    Parameters
    ----------
    inner:
        The network's adapter (a module, or one loaded from a file).
    centers, scales:
        One value per column: the network reads ``(x - centers) / scales``
        (:meth:`FeatureSchema.model_transform` gives them).
    """

    def __init__(self, inner: TorchAdapter, centers: Sequence[float] | np.ndarray,
                 scales: Sequence[float] | np.ndarray) -> None:
        if not isinstance(inner, TorchAdapter):
            raise UnsupportedModelError("inner", "must be a TorchAdapter (ScaledAdapter takes "
                                        "the others)", type(inner).__name__)
        if inner.input_kind != "tabular":
            raise UnsupportedModelError("inner", "scaled columns are for tabular models",
                                        inner.input_kind)
        n = inner.sample_shape[0] if inner.sample_shape else None
        self.centers, self.scales = _affine(centers, scales, n)
        module = _ScaledModule(Standardise(self.centers, self.scales), inner.module)
        module.training = inner.module.training   # not train(): exported programs refuse it
        super().__init__(module, input_kind="tabular",
                         sample_shape=inner.sample_shape or (self.centers.shape[0],),
                         output_space=inner.output_space, batch_size=inner.batch_size)
        self.inner = inner

    def torch_module(self) -> torch.nn.Module:
        self.inner.torch_module()   # the inner adapter's own check of its mode
        return self.module

    def fingerprint(self) -> str:
        return _scaled_fingerprint(self.inner.fingerprint(), self.centers, self.scales)


class ScaledAdapter(ModelAdapter):
    """A model without a torch module (onnxruntime, a scikit-learn-API estimator) trained
    on standardised columns, fed the schema's raw columns: ``predict(X)`` is the inner
    model's prediction of ``(X - centers) / scales``. See :class:`ScaledTorchAdapter` for
    torch networks (gradient methods run through the scaling there)."""

    def __init__(self, inner: ModelAdapter, centers: Sequence[float] | np.ndarray,
                 scales: Sequence[float] | np.ndarray) -> None:
        if isinstance(inner, TorchAdapter) or inner.differentiable:
            raise UnsupportedModelError("inner", "a differentiable model's scaling goes in "
                                        "front of its module: use ScaledTorchAdapter",
                                        type(inner).__name__)
        if inner.input_kind != "tabular":
            raise UnsupportedModelError("inner", "scaled columns are for tabular models",
                                        inner.input_kind)
        n = inner.sample_shape[0] if inner.sample_shape else None
        self.centers, self.scales = _affine(centers, scales, n)
        self.inner = inner
        self.framework = inner.framework
        self.input_kind = "tabular"
        self.output_space = inner.output_space
        self.differentiable = False
        self.sample_shape = inner.sample_shape or (self.centers.shape[0],)

    @property
    def is_tree_ensemble(self) -> bool:
        return False   # the trees split scaled columns: TreeSHAP would not see these

    def transform(self, X: np.ndarray) -> np.ndarray:
        """The model's columns of raw rows ``X``."""
        out: np.ndarray = (np.asarray(X, dtype=np.float64) - self.centers) / self.scales
        return out

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = self.validate_inputs(X, "X")
        columns = self.transform(X)
        # A float32 model gets float32 columns, as it got its raw ones.
        return self.inner.predict(columns.astype(X.dtype) if X.dtype.kind == "f" else columns)

    def fingerprint(self) -> str:
        return _scaled_fingerprint(self.inner.fingerprint(), self.centers, self.scales)


def scaled(adapter: ModelAdapter, schema: FeatureSchema) -> ModelAdapter:
    """``adapter`` with the schema's declared scaling in front of it (``encoding`` of its
    numeric features), or ``adapter`` itself when the schema declares none."""
    transform = schema.model_transform()
    if transform is None:
        return adapter
    centers, scales = transform
    if isinstance(adapter, TorchAdapter):
        return ScaledTorchAdapter(adapter, centers, scales)
    return ScaledAdapter(adapter, centers, scales)
