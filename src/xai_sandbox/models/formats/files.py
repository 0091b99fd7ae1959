"""Model files: which format a file is in, its SHA-256, and what loading it gives.

Every format is read as data. A file's fingerprint is the SHA-256 of its exact bytes (of
every file, for a model that is a folder), so the fingerprint in the audit log is the
file the owner holds: ``sha256sum model.json`` checks it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from xai_sandbox.audit.canonical import sha256_file
from xai_sandbox.errors import InvalidInputError, UnsupportedModelError
from xai_sandbox.models.adapters import ModelAdapter

__all__ = ["FORMATS", "LoadedModel", "detect_format", "sha256_file", "sha256_folder"]

# Format name -> what it is, as `xai-sandbox models formats` prints it.
FORMATS = {
    "xgboost_json": "XGBoost model in its JSON format (Booster.save_model('m.json'))",
    "xgboost_ubj": "XGBoost model in its binary UBJSON format (save_model('m.ubj'))",
    "lightgbm_text": "LightGBM text model (Booster.save_model('m.txt'))",
    "skops": "scikit-learn estimator or pipeline saved by skops.io.dump (.skops); only "
             "trusted types load",
    "onnx": "ONNX model (.onnx), scored by onnxruntime; gradient methods where the graph "
            "converts to PyTorch",
    "torch_export": "PyTorch program saved by torch.export.save (.pt2)",
    "torchscript": "TorchScript module (torch.jit.save, .pt/.ts), weights optionally from a "
                   "safetensors file",
    "mlflow": "an MLflow model folder (holding MLmodel) or a models:/name/version URI; the "
              "flavour picks the loader, pickled flavours only with trust_pickle",
}

_BY_SUFFIX = {".json": "xgboost_json", ".ubj": "xgboost_ubj", ".txt": "lightgbm_text",
              ".lgb": "lightgbm_text", ".skops": "skops", ".onnx": "onnx",
              ".pt2": "torch_export", ".pt": "torchscript", ".ts": "torchscript",
              ".torchscript": "torchscript"}
_CHUNK = 1 << 20


@dataclass(frozen=True)
class LoadedModel:
    """A model read from a file, with the adapter every explainer uses.

    Attributes
    ----------
    adapter:
        The model behind the adapter contract (predict, probabilities, gradients where
        ``adapter.differentiable``); its fingerprint is ``sha256``.
    format:
        One of :data:`FORMATS`.
    sha256:
        SHA-256 of the file's bytes (of the folder's manifest for a folder).
    notes:
        What a user should know about this model's methods, e.g. why gradient methods
        are unavailable.
    trusted_types:
        For skops files and pickled MLflow flavours: the types the operator trusted.
    class_names:
        The classes the file itself names, where it does (scikit-learn's ``classes_``).
    """

    adapter: ModelAdapter
    format: str
    sha256: str
    notes: tuple[str, ...] = ()
    trusted_types: tuple[str, ...] = ()
    trust_pickle: bool = False
    class_names: tuple[str, ...] = field(default=())

    @property
    def gradients(self) -> bool:
        return self.adapter.differentiable


def folder_files(root: Path) -> Iterator[Path]:
    """The regular files below ``root``, sorted, links refused."""
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            raise InvalidInputError("path", "must not contain symbolic links", str(path))
        if path.is_file():
            yield path


def sha256_folder(root: Path) -> str:
    """SHA-256 of a folder's manifest: one line per file, ``<sha256>  <relative path>``,
    sorted by path, as ``sha256sum`` prints them."""
    lines = [f"{sha256_file(p)}  {p.relative_to(root).as_posix()}\n"
             for p in folder_files(root)]
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def detect_format(path: Path) -> str:
    """The format of a model file, from its name and first bytes.

    A folder holding ``MLmodel`` is an MLflow model; ``.json`` and ``.txt`` files are told
    apart by their first bytes (an XGBoost JSON document, a LightGBM ``tree`` header).
    """
    if path.is_dir():
        if (path / "MLmodel").is_file():
            return "mlflow"
        raise UnsupportedModelError("path", "a folder must be an MLflow model (holding an "
                                    "MLmodel file)", str(path))
    if path.name == "MLmodel":
        return "mlflow"
    fmt = _BY_SUFFIX.get(path.suffix.lower())
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(b"PK\x03\x04") and fmt in (None, "torchscript", "torch_export"):
        # Both torch formats are zip archives: torch.export's holds an archive_format
        # record naming it "pt2".
        import zipfile

        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        if any(n.endswith("archive_format") for n in names) or any(
                "/models/" in n and n.endswith(".json") for n in names):
            return "torch_export"
        if any(n.endswith("constants.pkl") or n.endswith("code/") or "/code/" in n
               for n in names):
            return "torchscript"
        if fmt is None and any(n.endswith("schema.json") for n in names):
            return "skops"
    if fmt is None:
        raise UnsupportedModelError(
            "path", f"must be a model file of a known format ({', '.join(_BY_SUFFIX)} or an "
            "MLflow folder)", path.name)
    stripped = head.lstrip()
    if fmt == "xgboost_json" and not stripped.startswith(b"{"):
        raise UnsupportedModelError("path", "a .json model must be an XGBoost JSON document",
                                    path.name)
    if fmt == "lightgbm_text" and not stripped.startswith(b"tree"):
        raise UnsupportedModelError("path", "a .txt model must be a LightGBM text model "
                                    "(starting with 'tree')", path.name)
    return fmt
