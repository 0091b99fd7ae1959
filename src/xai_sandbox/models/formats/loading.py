"""One entry point for every model file: :func:`load_model_file`."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xai_sandbox.errors import ConflictError, InvalidInputError, UnsupportedModelError
from xai_sandbox.models.adapters import ModelAdapter, SklearnAdapter
from xai_sandbox.models.formats.files import (
    FORMATS,
    LoadedModel,
    detect_format,
    sha256_file,
    sha256_folder,
)
from xai_sandbox.models.schema import FeatureSchema

__all__ = ["load_model_file"]


def load_model_file(path: str | Path, *, format: str | None = None,
                    schema: FeatureSchema | None = None, weights: str | Path | None = None,
                    trusted: Sequence[str] = (), trust_pickle: bool = False,
                    expected_sha256: str | None = None, output_space: str | None = None,
                    tracking_uri: str | None = None) -> LoadedModel:
    """Load a model from a file (or an MLflow folder or URI) behind the adapter contract.

    Parameters
    ----------
    path:
        The model file, an MLflow model folder, or an MLflow ``models:/`` / ``runs:/`` URI.
    format:
        One of :data:`~xai_sandbox.models.formats.FORMATS`; by default told from the name
        and first bytes.
    schema:
        The feature schema; a scikit-learn pipeline fitted on a DataFrame of the raw
        features is then fed the raw features it expects.
    weights:
        TorchScript only: a safetensors file whose tensors replace the module's.
    trusted:
        skops: types beyond skops' own trusted ones that the operator has reviewed.
    trust_pickle:
        MLflow: load a pickled flavour (``sklearn``, ``pytorch``), which can run the
        author's code. Refused without it.
    expected_sha256:
        A pinned fingerprint: a file whose SHA-256 differs is refused.
    output_space:
        What the model outputs, where the format does not say (ONNX, torch):
        ``"probability"``, ``"logit"`` or ``"output"``.
    tracking_uri:
        For ``models:/`` URIs: the local MLflow tracking store (else
        ``MLFLOW_TRACKING_URI``).

    Raises
    ------
    UnsupportedModelError
        For a file that is not a loadable model of its format, an untrusted type, or a
        pickled MLflow flavour without ``trust_pickle``.
    ConflictError
        When ``expected_sha256`` is given and the file's digest differs.
    """
    if format is not None and format not in FORMATS:
        raise InvalidInputError("format", f"must be one of {sorted(FORMATS)}", format)
    if not isinstance(trust_pickle, bool):
        raise InvalidInputError("trust_pickle", "must be true or false", trust_pickle)
    if output_space not in (None, "probability", "logit", "output"):
        raise InvalidInputError("output_space", "must be 'probability', 'logit' or 'output'",
                                output_space)
    text = str(path)
    if text.startswith(("models:/", "runs:/")):
        from xai_sandbox.models.formats.mlflow_models import resolve_uri

        p = resolve_uri(text, tracking_uri)
    else:
        p = Path(path)
        if not p.exists():
            raise InvalidInputError("path", "must be an existing model file or folder", text)
    fmt = format or detect_format(p)
    if fmt == "mlflow" and p.name == "MLmodel":
        p = p.parent
    w = Path(weights) if weights is not None else None
    if w is not None and fmt != "torchscript":
        raise InvalidInputError("weights", "a weights file goes with a TorchScript module",
                                str(w))
    sha = _digest(p, w)
    if expected_sha256 is not None and sha != expected_sha256:
        raise ConflictError("expected_sha256", f"must match the file's SHA-256 {sha}",
                            expected_sha256)
    if fmt == "mlflow":
        loaded = _load_mlflow(p, sha, schema=schema, trust_pickle=trust_pickle,
                              output_space=output_space)
    else:
        loaded = _load(p, fmt, sha, schema=schema, weights=w, trusted=trusted,
                       output_space=output_space)
    return _with_scaling(loaded, schema)


def _with_scaling(loaded: LoadedModel, schema: FeatureSchema | None) -> LoadedModel:
    """The model with the schema's declared ``encoding`` in front of it (it is fed the
    raw columns; see :func:`xai_sandbox.models.pipeline.scaled`)."""
    if schema is None or schema.model_transform() is None:
        return loaded
    from xai_sandbox.models.pipeline import FrameAdapter, scaled

    if isinstance(loaded.adapter, FrameAdapter):
        scaled_feature = next(f.name for f in schema.features if f.encoding is not None)
        raise InvalidInputError(
            f"schema.features[{schema.names.index(scaled_feature)}].encoding",
            "must be absent for a pipeline fitted on raw features (it scales them itself)",
            scaled_feature)
    adapter = scaled(loaded.adapter, schema)
    return dataclasses.replace(loaded, adapter=adapter)


def _digest(path: Path, weights: Path | None) -> str:
    if path.is_dir():
        return sha256_folder(path)
    if weights is None:
        return sha256_file(path)
    # A module and its weights: the digest of both files' digests, listed as sha256sum
    # would list files named "module" and "weights" (whatever the files are called).
    manifest = f"{sha256_file(path)}  module\n{sha256_file(weights)}  weights\n"
    return hashlib.sha256(manifest.encode()).hexdigest()


def _load(path: Path, fmt: str, sha: str, *, schema: FeatureSchema | None,
          weights: Path | None = None, trusted: Sequence[str] = (),
          output_space: str | None = None) -> LoadedModel:
    notes: tuple[str, ...] = ()
    trusted_types: tuple[str, ...] = ()
    adapter: ModelAdapter
    if fmt in ("xgboost_json", "xgboost_ubj"):
        from xai_sandbox.models.formats.boosters import load_xgboost

        adapter = load_xgboost(path, sha)
    elif fmt == "lightgbm_text":
        from xai_sandbox.models.formats.boosters import load_lightgbm

        adapter = load_lightgbm(path, sha)
    elif fmt == "skops":
        from xai_sandbox.models.formats.sklearn_files import load_skops

        estimator, trusted_types = load_skops(path, trusted)
        adapter = estimator_adapter(estimator, sha, schema)
    elif fmt == "onnx":
        from xai_sandbox.models.formats.onnx_files import load_onnx

        adapter, notes = load_onnx(path, sha, output_space=output_space)
    elif fmt == "torch_export":
        from xai_sandbox.models.formats.torch_files import load_torch_export

        adapter = load_torch_export(path, sha, output_space or "logit")
    elif fmt == "torchscript":
        from xai_sandbox.models.formats.torch_files import load_torchscript

        adapter = load_torchscript(path, sha, weights, output_space or "logit")
    else:  # pragma: no cover - FORMATS is checked by the caller
        raise UnsupportedModelError("format", f"must be one of {sorted(FORMATS)}", fmt)
    if not adapter.differentiable and not notes:
        notes = ("gradient methods are unavailable: the model is not differentiable; "
                 "black-box and tree methods run",)
    return LoadedModel(adapter=adapter, format=fmt, sha256=sha, notes=notes,
                       trusted_types=trusted_types,
                       class_names=_class_names(adapter))


def estimator_adapter(estimator: Any, sha: str, schema: FeatureSchema | None
                      ) -> ModelAdapter:
    """A scikit-learn estimator's adapter: fed the raw features as a DataFrame when it
    was fitted on one (a pipeline with its own encoders), else the encoded columns."""
    if schema is not None:
        from xai_sandbox.models.pipeline import FrameAdapter, needs_frame

        if needs_frame(estimator, schema):
            framed: ModelAdapter = FrameAdapter(estimator, schema, fingerprint=sha)
            return framed
    adapter = SklearnAdapter(estimator)
    adapter.source_sha256 = sha
    return adapter


def _class_names(adapter: ModelAdapter) -> tuple[str, ...]:
    classes = getattr(getattr(adapter, "estimator", None), "classes_", None)
    return tuple(str(c) for c in classes) if classes is not None else ()


def _load_mlflow(root: Path, sha: str, *, schema: FeatureSchema | None, trust_pickle: bool,
                 output_space: str | None) -> LoadedModel:
    from xai_sandbox.models.formats.mlflow_models import load_pickled, read_mlmodel
    from xai_sandbox.models.formats.torch_files import ExportedAdapter

    found = read_mlmodel(root)
    if not found.pickled:
        assert found.format is not None
        assert found.data is not None
        inner = _load(found.data, found.format, sha, schema=schema,
                      output_space=output_space)
        return LoadedModel(adapter=inner.adapter, format="mlflow", sha256=sha,
                           notes=(f"MLflow {found.flavour} flavour", *inner.notes),
                           class_names=inner.class_names)
    if not trust_pickle:
        raise UnsupportedModelError(
            "model", f"is an MLflow {found.flavour} model stored as a pickle, which can run "
            "its author's code when loaded; register it in a data format (skops, ONNX, "
            "XGBoost, LightGBM, torch.export), or pass trust_pickle (recorded in the audit "
            "log)", root.name)
    model = load_pickled(found)
    import torch

    adapter: ModelAdapter
    if isinstance(model, torch.nn.Module):
        adapter = ExportedAdapter(model, sha256=sha, exported=False,
                                  output_space=output_space or "logit")
    else:
        adapter = estimator_adapter(model, sha, schema)
    return LoadedModel(adapter=adapter, format="mlflow", sha256=sha,
                       notes=(f"MLflow {found.flavour} flavour, loaded from a pickle the "
                              "operator trusted",), trust_pickle=True,
                       class_names=_class_names(adapter))
