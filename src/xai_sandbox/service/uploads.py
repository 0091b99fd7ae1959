"""Model uploads: ``POST /v1/models`` as ``multipart/form-data``.

Starlette spools each file part to disk past 1 MiB, and :class:`~.middleware.BodyLimit`
stops a body over ``max_upload_bytes`` while it streams in, so an upload is never held
whole in memory. The parts are copied to a private temporary folder under names the
service chooses (only the client's file suffix is kept, and only a known one), then
registered by :func:`xai_sandbox.workflows.upload.register_file`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml
from starlette.datastructures import FormData, UploadFile

from xai_sandbox.errors import InvalidInputError

__all__ = ["UPLOAD_FORM", "upload_arguments"]

_FILES = {"model", "schema", "data", "weights"}
_TEXTS = {"model_id", "version", "policy", "card", "anchors", "class_names", "format",
          "trusted", "trust_pickle", "sha256", "output_space", "adverse_class"}
_SUFFIXES = {".json", ".ubj", ".txt", ".lgb", ".skops", ".onnx", ".pt2", ".pt", ".ts",
             ".torchscript", ".csv", ".parquet", ".pq", ".yaml", ".yml", ".safetensors",
             ".zip"}
_MAX_TEXT = 1 << 20

# The form as the OpenAPI document describes it.
UPLOAD_FORM: dict[str, Any] = {
    "type": "object", "required": ["model", "schema", "model_id"],
    "properties": {
        "model": {"type": "string", "format": "binary", "description":
                  "the model file (a format of `xai-sandbox models formats`); an MLflow "
                  "model as a .zip of its folder"},
        "schema": {"type": "string", "format": "binary",
                   "description": "the feature schema, YAML or JSON"},
        "data": {"type": "string", "format": "binary",
                 "description": "optional training sample, CSV or Parquet"},
        "weights": {"type": "string", "format": "binary",
                    "description": "TorchScript only: safetensors weights"},
        "model_id": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"},
        "version": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"},
        "policy": {"type": "string", "description": "the explanation policy as JSON "
                   "(default: chosen for the model, with adverse_class)"},
        "adverse_class": {"type": "string"},
        "class_names": {"type": "string", "description": "JSON list, or comma-separated"},
        "card": {"type": "string", "description": "the model card as JSON"},
        "anchors": {"type": "string", "description": "a shipped anchor library's name"},
        "format": {"type": "string"},
        "trusted": {"type": "string", "description": "skops: a reviewed type to trust "
                    "(repeatable)"},
        "trust_pickle": {"type": "boolean", "description": "MLflow: load a pickled flavour "
                         "(recorded in the audit log)"},
        "sha256": {"type": "string", "description": "refuse the file unless it has this "
                   "SHA-256"},
        "output_space": {"type": "string", "enum": ["probability", "logit", "output"]},
    },
}


def _text(form: FormData, name: str) -> str | None:
    value = form.get(name)
    if value is None or value == "":  # an empty form field is an absent one
        return None
    if not isinstance(value, str):
        raise InvalidInputError(name, "must be a text field, not a file", name)
    if len(value) > _MAX_TEXT or "\x00" in value:
        raise InvalidInputError(name, "must be text of at most 1 MiB without NUL", name)
    return value


def _json_field(form: FormData, name: str) -> Any:
    text = _text(form, name)
    if text is None:
        return None
    from xai_sandbox.service.strict import strict_json

    try:
        return strict_json(text.encode())
    except Exception as exc:
        raise InvalidInputError(name, "must be JSON", text[:40]) from exc


def _save(part: Any, name: str, folder: Path) -> Path:
    if not isinstance(part, UploadFile):
        raise InvalidInputError(name, "must be a file part", type(part).__name__)
    suffix = Path(part.filename or "").suffix.lower()
    if suffix not in _SUFFIXES:
        raise InvalidInputError(f"{name}.filename", f"must end in one of {sorted(_SUFFIXES)}",
                                part.filename)
    target = folder / f"{name}{suffix}"
    part.file.seek(0)
    with open(target, "wb") as out:
        shutil.copyfileobj(part.file, out, 1 << 20)
    return target


def upload_arguments(form: FormData, folder: Path) -> dict[str, Any]:
    """The keyword arguments of ``register_file`` from an upload form; files are copied
    into ``folder``."""
    unknown = sorted(set(form.keys()) - _FILES - _TEXTS)
    if unknown:
        raise InvalidInputError("form", f"has unknown fields (known: {sorted(_FILES | _TEXTS)})",
                                unknown)
    for name in ("model", "schema", "model_id"):
        if form.get(name) is None:
            raise InvalidInputError(name, "is required", None)
    model = _save(form["model"], "model", folder)
    if model.suffix == ".zip":
        model = _unzip_mlflow(model, folder)
    schema_path = _save(form["schema"], "schema", folder)
    try:
        schema = yaml.safe_load(schema_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InvalidInputError("schema", "must be a YAML or JSON file", "schema") from exc
    args: dict[str, Any] = {
        "model": model, "schema": schema, "model_id": _text(form, "model_id"),
        "version": _text(form, "version") or "1",
        "policy": _json_field(form, "policy"), "card": _json_field(form, "card"),
        "anchors": _text(form, "anchors"), "adverse_class": _text(form, "adverse_class"),
        "format": _text(form, "format"), "expected_sha256": _text(form, "sha256"),
        "output_space": _text(form, "output_space"),
        "trusted": tuple(str(t) for t in form.getlist("trusted")),
        "trust_pickle": _flag(_text(form, "trust_pickle")),
    }
    names = _text(form, "class_names")
    if names is not None:
        args["class_names"] = (json.loads(names) if names.lstrip().startswith("[")
                               else [n.strip() for n in names.split(",")])
    for name in ("data", "weights"):
        if form.get(name) is not None:
            args[name] = _save(form[name], name, folder)
    return args


def _flag(text: str | None) -> bool:
    if text is None:
        return False
    if text.lower() not in ("true", "false", "1", "0"):
        raise InvalidInputError("trust_pickle", "must be true or false", text)
    return text.lower() in ("true", "1")


def _unzip_mlflow(archive: Path, folder: Path) -> Path:
    """An MLflow model folder sent as a zip: unpacked with every name checked (no absolute
    paths, no '..', no links), and its MLmodel found."""
    import zipfile

    target = folder / "mlflow"
    try:
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                name = Path(info.filename)
                if name.is_absolute() or ".." in name.parts or (info.external_attr >> 16
                                                                & 0o170000) == 0o120000:
                    raise InvalidInputError("model", "a zip entry leaves its folder",
                                            info.filename)
            z.extractall(target)
    except zipfile.BadZipFile as exc:
        raise InvalidInputError("model", "must be a zip of an MLflow model folder",
                                "model.zip") from exc
    found = sorted(target.rglob("MLmodel"))
    if not found:
        raise InvalidInputError("model", "the zip must hold an MLflow model (an MLmodel "
                                "file)", "model.zip")
    return found[0].parent


def new_folder() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="xai-upload-")
