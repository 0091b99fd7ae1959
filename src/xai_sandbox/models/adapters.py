"""Model adapters: one protocol over PyTorch modules and scikit-learn-API estimators.

An adapter never changes the model it wraps. It validates inputs at the boundary, scores
them, exposes a differentiable forward where the model has one, and fingerprints the
weights. :func:`wrap` picks the adapter for a model.
"""

from __future__ import annotations

import contextlib
import copy
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any, Literal

import numpy as np
import torch

from xai_sandbox.errors import InvalidInputError, NotDifferentiableError, UnsupportedModelError
from xai_sandbox.models.accelerator import is_out_of_memory, unwrapped
from xai_sandbox.models.fingerprint import fingerprint_estimator, fingerprint_module

__all__ = ["InputKind", "ModelAdapter", "SklearnAdapter", "TorchAdapter", "wrap"]

InputKind = Literal["tabular", "image", "tokens"]
_INPUT_KINDS = ("tabular", "image", "tokens")


@contextlib.contextmanager
def model_errors(shape: tuple[int, ...]) -> Iterator[None]:
    """Turn an error raised inside the model into a typed error that names the input."""
    try:
        yield
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:
        if isinstance(exc, InvalidInputError | UnsupportedModelError) or is_out_of_memory(exc):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidInputError(
            "inputs", f"must be accepted by the model, which raised {type(exc).__name__}: "
            f"{first}", f"array of shape {shape}") from exc


class ModelAdapter(ABC):
    """What every explainer needs of a model.

    Attributes
    ----------
    framework:
        ``"torch"`` or ``"sklearn"``.
    input_kind:
        ``"tabular"`` (rows of columns), ``"image"`` (N, C, H, W) or ``"tokens"`` (N, T ids).
    output_space:
        What :meth:`predict` returns: ``"logit"``, ``"probability"`` or ``"output"``.
    differentiable:
        Whether gradient methods can run (a torch module).
    source_sha256:
        For a model loaded from a file, the SHA-256 of the file's exact bytes: it is then
        the fingerprint (``None``: the fingerprint is computed from the weights).
    """

    framework: str
    input_kind: InputKind
    output_space: str
    differentiable: bool
    sample_shape: tuple[int, ...] | None
    source_sha256: str | None = None

    @abstractmethod
    def predict(self, X: np.ndarray) -> np.ndarray:
        """Outputs of shape ``(n, n_outputs)`` as float64, in ``output_space``."""

    @abstractmethod
    def fingerprint(self) -> str:
        """SHA-256 hex digest of the weights or parameters (of the file, when loaded from
        one: see ``source_sha256``)."""

    def forward_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """A forward over tensors for perturbation methods (Captum's ``forward_func``)."""
        out = self.predict(x.detach().cpu().numpy())
        return torch.as_tensor(out, dtype=torch.float64)

    def torch_module(self) -> torch.nn.Module:
        """The differentiable module; raises for models without gradients."""
        raise NotDifferentiableError(
            "model", "gradient methods need a differentiable torch.nn.Module",
            type(self).__name__)

    def validate_inputs(self, inputs: Any, parameter: str = "inputs") -> np.ndarray:
        """Check dtype, shape and finiteness; return a batch as a numpy array.

        A single sample (one fewer dimension than a batch) is promoted to a batch of one.
        """
        if isinstance(inputs, torch.Tensor):
            inputs = inputs.detach().cpu().numpy()
        try:
            X = np.asarray(inputs)
        except (ValueError, TypeError) as exc:
            raise InvalidInputError(parameter, "must be a numeric array", type(inputs)) from exc
        integer_only = self.input_kind == "tokens"
        allowed = "iu" if integer_only else "iuf"
        if X.dtype.kind not in allowed or X.dtype == np.bool_:
            rule = "must hold integer token ids" if integer_only else "must be a real numeric array"
            raise InvalidInputError(parameter, rule, f"dtype {X.dtype}")
        if self.sample_shape is not None and X.shape == self.sample_shape:
            X = X[None]
        if X.ndim < 2 or X.shape[0] == 0:
            raise InvalidInputError(parameter, "must be a non-empty batch with a leading row axis",
                                    f"shape {X.shape}")
        if self.sample_shape is not None and X.shape[1:] != self.sample_shape:
            raise InvalidInputError(parameter, f"each sample must have shape {self.sample_shape}",
                                    f"shape {X.shape[1:]}")
        if X.dtype.kind == "f" and not np.isfinite(X).all():
            bad = np.argwhere(~np.isfinite(X))[0]
            raise InvalidInputError(parameter, "must be finite (no NaN or infinity)",
                                    f"{X[tuple(bad)]} at index {tuple(int(i) for i in bad)}")
        return X


class TorchAdapter(ModelAdapter):
    """A ``torch.nn.Module`` whose output is ``(n, n_outputs)`` logits or scores.

    Parameters
    ----------
    module:
        The model, in eval mode. It is never modified. A ``torch.compile``'d module or one
        in ``DataParallel`` runs as it is; ``DistributedDataParallel`` runs its
        ``.module`` (explaining needs no gradient reduction). Layer names, parameters and
        the fingerprint are the wrapped module's, so a compiled model and its original
        name their layers alike and share a fingerprint.
    input_kind:
        ``"tabular"``, ``"image"`` or ``"tokens"``.
    sample_shape:
        Shape of one sample, checked on every call (``(20,)``, ``(3, 224, 224)``).
    embedding_layer:
        For token models, the name of the embedding module whose output is attributed.
    output_space:
        ``"logit"`` (default) or what the module returns.
    batch_size:
        Rows per forward pass in :meth:`predict`.
    """

    framework = "torch"
    differentiable = True

    def __init__(self, module: torch.nn.Module, *, input_kind: InputKind = "tabular",
                 sample_shape: tuple[int, ...] | None = None,
                 embedding_layer: str | None = None, output_space: str = "logit",
                 batch_size: int = 1024) -> None:
        self.module = module
        self.input_kind = input_kind
        self.sample_shape = tuple(sample_shape) if sample_shape is not None else None
        self.embedding_layer = embedding_layer
        self.output_space = output_space
        self.batch_size = batch_size
        self._check()
        self.base_module = unwrapped(module)
        self._runs = self.module if isinstance(self.module, torch.nn.DataParallel) or (
            hasattr(self.module, "_orig_mod")) else self.base_module
        self._moved: dict[str, TorchAdapter] = {}

    def _check(self) -> None:
        if not isinstance(self.module, torch.nn.Module):
            raise UnsupportedModelError("module", "must be a torch.nn.Module", type(self.module))
        if self.input_kind not in _INPUT_KINDS:
            raise InvalidInputError("input_kind", f"must be one of {list(_INPUT_KINDS)}",
                                    self.input_kind)
        if self.input_kind == "tokens" and self.embedding_layer is None:
            raise InvalidInputError("embedding_layer", "token models need the embedding layer's "
                                    "name", None)
        if self.embedding_layer is not None:
            names = dict(unwrapped(self.module).named_modules())
            if self.embedding_layer not in names:
                raise InvalidInputError("embedding_layer", "must name a submodule of the model",
                                        self.embedding_layer)
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise InvalidInputError("batch_size", "must be a positive integer", self.batch_size)

    @property
    def device(self) -> torch.device:
        for p in self.base_module.parameters():
            return p.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for p in self.base_module.parameters():
            if p.is_floating_point():
                return p.dtype
        return torch.float32

    def torch_module(self) -> torch.nn.Module:
        """The model's own module (a compiled or wrapped model's :attr:`base_module`),
        whose layer names the methods use; :meth:`forward_tensor` runs the wrapper."""
        if self.base_module.training:
            raise InvalidInputError("model", "must be in eval mode for explanation "
                                    "(call model.eval())", "training mode")
        return self.base_module

    def on(self, device: torch.device) -> TorchAdapter:
        """This adapter on ``device``: itself where the model already is, else an adapter
        over a copy of the model moved there (made once per device; the caller's model is
        never moved). A compiled wrapper is not copied: the copy runs uncompiled."""
        if device == self.device or (device.type == self.device.type == "cuda"
                                     and device.index is None):
            return self
        key = str(device)
        if key not in self._moved:
            moved = TorchAdapter(copy.deepcopy(self.base_module).to(device),
                                 input_kind=self.input_kind, sample_shape=self.sample_shape,
                                 embedding_layer=self.embedding_layer,
                                 output_space=self.output_space, batch_size=self.batch_size)
            moved.source_sha256 = self.fingerprint()  # the same model, elsewhere
            self._moved[key] = moved
        return self._moved[key]

    def embedding_module(self) -> torch.nn.Module:
        if self.embedding_layer is None:
            raise InvalidInputError("embedding_layer", "is not set on this adapter", None)
        layer: torch.nn.Module = dict(self.base_module.named_modules())[self.embedding_layer]
        return layer

    def to_tensor(self, X: np.ndarray) -> torch.Tensor:
        if self.input_kind == "tokens":
            return torch.as_tensor(X, dtype=torch.long, device=self.device)
        return torch.as_tensor(X, dtype=self.dtype, device=self.device)

    def forward_tensor(self, x: torch.Tensor) -> torch.Tensor:
        runs = self._runs
        if runs is not self.base_module and hasattr(runs, "_orig_mod") and _hooked(
                self.base_module):
            # A compiled graph does not run hooks added after it was compiled (dynamo
            # skips their guards): a method that hooks layers runs the module eagerly.
            runs = self.base_module
        out: torch.Tensor = runs(x)
        if out.ndim == 1:
            out = out[:, None]
        if out.ndim != 2:
            raise UnsupportedModelError("model", "must return outputs of shape (n, n_outputs)",
                                        tuple(out.shape))
        return out

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = self.validate_inputs(X, "X")
        self.torch_module()  # refuses a module in training mode
        outs = []
        with torch.no_grad(), model_errors(X.shape):
            for start in range(0, X.shape[0], self.batch_size):
                outs.append(self.forward_tensor(self.to_tensor(X[start:start + self.batch_size]))
                            .detach().cpu().double())
        return torch.cat(outs).numpy()

    def fingerprint(self) -> str:
        return self.source_sha256 or fingerprint_module(self.base_module)


def _hooked(module: torch.nn.Module) -> bool:
    """Whether any submodule of ``module`` has a forward or backward hook."""
    return any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
               or m._backward_pre_hooks for m in module.modules())


def _is_tree_ensemble(est: Any) -> bool:
    module = type(est).__module__
    if module.startswith(("lightgbm", "xgboost")):
        return True
    return type(est).__name__ in {
        "DecisionTreeClassifier", "DecisionTreeRegressor", "RandomForestClassifier",
        "RandomForestRegressor", "ExtraTreesClassifier", "ExtraTreesRegressor",
        "GradientBoostingClassifier", "GradientBoostingRegressor"}


def _lightgbm_proba(est: Any) -> Callable[[np.ndarray], np.ndarray] | None:
    """A fitted LightGBM classifier's ``predict_proba`` through its booster, without the
    scikit-learn wrapper's per-call parameter handling (0.37 ms of a 0.4 ms call on one
    row); the same numbers, laid out as ``predict_proba`` lays them out (the tests hold
    the two equal). ``None`` for anything else, or a custom objective."""
    if not type(est).__module__.startswith("lightgbm") or not hasattr(est, "predict_proba"):
        return None
    try:
        booster, n_classes, objective = est.booster_, est.n_classes_, est.objective_
    except (AttributeError, ValueError):  # not fitted: its own predict_proba says so
        return None
    if callable(objective):
        return None

    def proba(X: np.ndarray) -> np.ndarray:
        p = np.asarray(booster.predict(X))
        return p if n_classes > 2 else np.vstack((1.0 - p, p)).transpose()

    return proba


class SklearnAdapter(ModelAdapter):
    """A fitted scikit-learn-API estimator: scikit-learn, LightGBM or XGBoost.

    ``predict`` returns ``predict_proba`` where the estimator has it, else ``predict`` as
    one column. Tree ensembles also expose their raw margin for TreeSHAP.
    """

    framework = "sklearn"
    differentiable = False
    input_kind: InputKind = "tabular"

    def __init__(self, estimator: Any, *, n_features: int | None = None) -> None:
        if not callable(getattr(estimator, "predict", None)):
            raise UnsupportedModelError("estimator", "must have a predict method",
                                        type(estimator))
        self.estimator = estimator
        n = n_features if n_features is not None else getattr(estimator, "n_features_in_", None)
        self.sample_shape = (int(n),) if n is not None else None
        self.output_space = "probability" if hasattr(estimator, "predict_proba") else "output"
        self._predict: Callable[[np.ndarray], Any] = (
            _lightgbm_proba(estimator) or estimator.predict_proba
            if self.output_space == "probability" else estimator.predict)

    @property
    def is_tree_ensemble(self) -> bool:
        return _is_tree_ensemble(self.estimator)

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = self.validate_inputs(X, "X")
        with model_errors(X.shape):
            out = np.asarray(self._predict(X), dtype=np.float64)
        return out[:, None] if out.ndim == 1 else out

    def predict_margin(self, X: np.ndarray) -> np.ndarray:
        """Raw scores before the link (log-odds for binary boosting), ``(n, n_margins)``."""
        est, module = self.estimator, type(self.estimator).__module__
        with model_errors(X.shape):
            if module.startswith("lightgbm"):  # the booster, as in _lightgbm_proba
                booster = getattr(est, "_Booster", None)
                out = (booster.predict(X, raw_score=True) if booster is not None
                       else est.predict(X, raw_score=True))
            elif module.startswith("xgboost"):
                out = est.predict(X, output_margin=True)
            elif type(est).__name__.startswith("GradientBoosting") and hasattr(
                    est, "decision_function"):
                out = est.decision_function(X)
            elif hasattr(est, "predict_proba"):  # forests and trees explain probabilities
                out = est.predict_proba(X)
            else:
                out = est.predict(X)
        out = np.asarray(out, dtype=np.float64)
        return out[:, None] if out.ndim == 1 else out

    def fingerprint(self) -> str:
        return self.source_sha256 or fingerprint_estimator(self.estimator)


def wrap(model: Any, **options: Any) -> ModelAdapter:
    """Return the adapter for ``model`` (an adapter is returned as it is).

    ``torch.nn.Module`` -> :class:`TorchAdapter` (``options`` go to it); anything with
    ``predict`` (scikit-learn, LightGBM, XGBoost) -> :class:`SklearnAdapter`.
    """
    if isinstance(model, ModelAdapter):
        if options:
            raise InvalidInputError("options", "cannot be applied to an existing adapter",
                                    sorted(options))
        return model
    if isinstance(model, torch.nn.Module):
        return TorchAdapter(model, **options)
    if callable(getattr(model, "predict", None)):
        return SklearnAdapter(model, **options)
    raise UnsupportedModelError(
        "model", "must be a torch.nn.Module, an estimator with predict(), or a ModelAdapter",
        type(model))
