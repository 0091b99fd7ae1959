"""MLflow models: a folder holding ``MLmodel``, or a ``models:/name/version`` (or
``runs:/``) URI resolved against a local tracking store.

The ``MLmodel`` file is read as YAML; its flavour decides the loader: ``onnx``,
``xgboost`` and ``lightgbm`` store their models in those formats' own files, read as data.
The ``sklearn`` and ``pytorch`` flavours (and a bare ``python_function``) store pickles,
which can run their author's code when loaded: they are refused unless the operator passes
``trust_pickle``, which the registration records (and so the audit log commits to).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from xai_sandbox.errors import InvalidInputError, UnsupportedModelError

__all__ = ["MlflowModel", "read_mlmodel", "resolve_uri"]

# Flavours whose files are data, in the order they are preferred, with the format of the
# file they name.
_DATA_FLAVOURS = ("onnx", "xgboost", "lightgbm")
_PICKLED_FLAVOURS = ("sklearn", "pytorch")


@dataclass(frozen=True)
class MlflowModel:
    """What an ``MLmodel`` file says: the flavour chosen, and the file or loader for it."""

    root: Path
    flavour: str
    format: str | None      # the file format of a data flavour; None for a pickled one
    data: Path | None       # the model file of a data flavour
    pickled: bool


def resolve_uri(uri: str, tracking_uri: str | None = None) -> Path:
    """A local folder for an MLflow model URI (``models:/name/version``, ``models:/name@
    alias``, ``runs:/id/path``, ``file:`` or a plain path). Nothing is fetched over a
    network: the tracking store must be local (a ``file:`` folder or ``sqlite:``)."""
    if not isinstance(uri, str) or not uri:
        raise InvalidInputError("uri", "must be an MLflow model URI or folder", uri)
    if not uri.startswith(("models:/", "runs:/")):
        path = Path(uri.removeprefix("file://").removeprefix("file:"))
        if not (path / "MLmodel").is_file():
            raise InvalidInputError("uri", "must be a folder holding an MLmodel file", uri)
        return path
    tracking = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not tracking or not tracking.startswith(("file:", "sqlite:", "/")):
        raise InvalidInputError(
            "tracking_uri", "a models:/ or runs:/ URI needs a local tracking store "
            "(file:/path/mlruns or sqlite:///path/mlflow.db)", tracking)
    import mlflow

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # local mlruns folders
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, tracking_uri=tracking)
    except Exception as exc:  # MlflowException, or the store's own errors
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InvalidInputError("uri", f"must name a model in the tracking store ({first})",
                                uri) from exc
    return Path(local)


def read_mlmodel(root: Path) -> MlflowModel:
    """Choose the flavour to load from the ``MLmodel`` file of ``root``."""
    try:
        spec = yaml.safe_load((root / "MLmodel").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UnsupportedModelError("model", "must hold a readable MLmodel YAML file",
                                    str(root.name)) from exc
    flavours = spec.get("flavors") if isinstance(spec, Mapping) else None
    if not isinstance(flavours, Mapping) or not flavours:
        raise UnsupportedModelError("model", "MLmodel must list its flavors", root.name)
    for name in _DATA_FLAVOURS:
        conf = flavours.get(name)
        if isinstance(conf, Mapping):
            return MlflowModel(root, name, *_data_file(root, name, conf), pickled=False)
    for name in _PICKLED_FLAVOURS:
        if isinstance(flavours.get(name), Mapping):
            return MlflowModel(root, name, None, None, pickled=True)
    raise UnsupportedModelError(
        "model", f"must have one of the flavours {[*_DATA_FLAVOURS, *_PICKLED_FLAVOURS]}",
        sorted(flavours))


def _data_file(root: Path, flavour: str, conf: Mapping[str, Any]) -> tuple[str, Path]:
    data = conf.get("data")
    if flavour == "xgboost":
        if conf.get("model_format") not in ("json", "ubj"):
            raise UnsupportedModelError("model", "an MLflow xgboost model must be saved as "
                                        "json or ubj (model_format)", conf.get("model_format"))
        fmt = f"xgboost_{conf['model_format']}"
    elif flavour == "lightgbm":
        fmt = "lightgbm_text"
    else:
        fmt = "onnx"
        data = conf.get("data", "model.onnx")
    if not isinstance(data, str):
        raise UnsupportedModelError("model", f"MLmodel's {flavour} flavour must name its data "
                                    "file", data)
    path = (root / data).resolve()
    if root.resolve() not in path.parents or not path.is_file():
        raise UnsupportedModelError("model", "the flavour's data file must lie inside the "
                                    "model folder", data)
    return fmt, path


def load_pickled(model: MlflowModel) -> Any:
    """A pickled flavour, through MLflow's own loader; only called with trust_pickle."""
    if model.flavour == "sklearn":
        import mlflow.sklearn

        return mlflow.sklearn.load_model(str(model.root))
    import mlflow.pytorch

    module = mlflow.pytorch.load_model(str(model.root), map_location="cpu")
    return module.eval()
