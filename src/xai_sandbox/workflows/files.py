"""Models registered from files: the stored source ``{"kind": "file", ...}`` names the
model file and the training sample by their SHA-256 in the blob store, so a restart loads
the same bytes again (and refuses them if they changed)."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from xai_sandbox.errors import InvalidInputError
from xai_sandbox.models.formats import FORMATS, load_model_file
from xai_sandbox.models.profile import fit_profile
from xai_sandbox.models.registry import RegisteredModel, register
from xai_sandbox.models.schema import FeatureSchema
from xai_sandbox.store.blobs import BlobStore
from xai_sandbox.workflows.context import Context

__all__ = ["MAX_TRAINING_ROWS", "blob_store", "load_file_source", "table_format",
           "training_rows"]

# Training rows kept in memory per model (counterfactual limits, proxy tests, profile).
MAX_TRAINING_ROWS = 100_000


def blob_store(ctx: Context) -> BlobStore:
    return BlobStore(ctx.settings.resolved_model_dir())


def table_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise InvalidInputError("data", "must be a .csv or .parquet file", path.name)
    return "parquet" if suffix in (".parquet", ".pq") else "csv"


def training_rows(schema: FeatureSchema, path: Path) -> np.ndarray:
    """The encoded rows of a training sample (at most :data:`MAX_TRAINING_ROWS`), read
    with the schema's features only; a value the schema refuses names its row."""
    from xai_sandbox.datasets.rows import schema_rows
    from xai_sandbox.datasets.tables import read_table

    frame = read_table(path, max_rows=MAX_TRAINING_ROWS)
    missing = [n for n in schema.names if n not in frame.columns]
    if missing:
        raise InvalidInputError("data", "must have a column for every feature of the schema",
                                missing)
    rows = schema_rows(schema, frame)
    if len(rows) < 10:
        raise InvalidInputError("data", "must hold at least 10 rows", len(rows))
    return schema.encode(rows)


def load_file_source(ctx: Context, source: Mapping[str, Any], model_id: str, version: str
                     ) -> tuple[RegisteredModel, np.ndarray | None, dict[str, Any]]:
    """The model of a stored ``{"kind": "file"}`` source, from the blob store."""
    fmt = source.get("format")
    if fmt not in FORMATS:
        raise InvalidInputError("source.format", f"must be one of {sorted(FORMATS)}", fmt)
    schema = FeatureSchema.from_dict(source.get("schema"))
    blobs = blob_store(ctx)
    with tempfile.TemporaryDirectory(prefix="xai-model-") as tmp:
        if "weights_sha256" in source:
            path, weights = (blobs.path(source["model_sha256"]),
                             blobs.path(source["weights_sha256"]))
        elif fmt == "mlflow":
            path, weights = blobs.folder(source["sha256"], Path(tmp)), None
        else:
            path, weights = _named(blobs.path(source["sha256"]), fmt, Path(tmp)), None
        loaded = load_model_file(path, format=fmt, schema=schema, weights=weights,
                                 trusted=source.get("trusted_types", ()),
                                 trust_pickle=bool(source.get("trust_pickle", False)),
                                 expected_sha256=source["sha256"],
                                 output_space=source.get("output_space"))
        data = None
        if source.get("data_sha256"):
            data = training_rows(schema, _named(blobs.path(source["data_sha256"]),
                                                source.get("data_format", "csv"), Path(tmp)))
    reference = schema.reference_row(data)[None] if data is not None else None
    model = register(loaded.adapter, model_id=model_id, version=version,
                     class_names=source["class_names"], schema=schema, reference=reference)
    if data is not None:
        model = RegisteredModel(**{**model.__dict__,
                                   "profile": fit_profile(data, schema.columns)})
    return model, data, {**source, "notes": list(loaded.notes)}


def _named(path: Path, fmt: str, tmp: Path) -> Path:
    """A stored blob under a name its format's reader accepts (some readers look at the
    suffix): a link in ``tmp``; blobs have no suffix of their own."""
    suffix = {"xgboost_json": ".json", "xgboost_ubj": ".ubj", "lightgbm_text": ".txt",
              "skops": ".skops", "onnx": ".onnx", "torch_export": ".pt2",
              "torchscript": ".pt", "csv": ".csv", "parquet": ".parquet"}.get(fmt, "")
    tmp.mkdir(parents=True, exist_ok=True)
    link = tmp / f"{path.name}{suffix}"
    if not link.exists():
        link.symlink_to(path)
    return link

