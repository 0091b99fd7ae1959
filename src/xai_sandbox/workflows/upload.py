"""Bring your own model: register a model file (or MLflow model) with its feature schema
and, optionally, a sample of its training data.

The model file and the training sample are stored content-addressed (their SHA-256 is
their name; the model's is its fingerprint in the audit log), and the stored spec names
them by digest, so a restart serves the same bytes again. Loading is
:func:`xai_sandbox.models.formats.load_model_file`: data formats only, pickles refused
unless the operator trusts them, which the spec (committed to by the log) records.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xai_sandbox.errors import InvalidInputError
from xai_sandbox.models.formats import LoadedModel, load_model_file
from xai_sandbox.models.schema import FeatureSchema
from xai_sandbox.workflows.context import Context
from xai_sandbox.workflows.explain import shapley_method
from xai_sandbox.workflows.files import blob_store, table_format
from xai_sandbox.workflows.register import register_model
from xai_sandbox.workflows.served import ServedModel

__all__ = ["default_policy", "register_file"]


def register_file(ctx: Context, model: str | Path, *,
                  schema: FeatureSchema | Mapping[str, Any], model_id: str, version: str,
                  policy: Mapping[str, Any] | None = None, adverse_class: str | None = None,
                  card: Mapping[str, Any] | None = None, anchors: Any = None,
                  data: str | Path | None = None, class_names: Sequence[str] | None = None,
                  format: str | None = None, weights: str | Path | None = None,
                  trusted: Sequence[str] = (), trust_pickle: bool = False,
                  expected_sha256: str | None = None, output_space: str | None = None,
                  tracking_uri: str | None = None) -> ServedModel:
    """Store, load, register and serve a model file.

    ``model`` is a file, an MLflow folder or an MLflow ``models:/`` URI; ``data`` a CSV
    or Parquet sample of the training data with the schema's raw features (other columns,
    such as the target, are ignored). The rest are those of
    :func:`~xai_sandbox.models.formats.load_model_file` and of a model spec (``policy``,
    ``card``, ``anchors``). Without a ``policy``, :func:`default_policy` chooses the
    methods for the model and needs ``adverse_class``.
    """
    schema = schema if isinstance(schema, FeatureSchema) else FeatureSchema.from_dict(schema)
    # Loaded first: a file that does not load is refused before anything is stored.
    loaded = load_model_file(model, format=format, schema=schema, weights=weights,
                             trusted=trusted, trust_pickle=trust_pickle,
                             expected_sha256=expected_sha256, output_space=output_space,
                             tracking_uri=tracking_uri)
    blobs = blob_store(ctx)
    path = _local(model, tracking_uri)
    stored_sha = blobs.put_folder(path) if path.is_dir() else (
        blobs.put(path) if weights is None else None)
    source: dict[str, Any] = {
        "kind": "file", "format": loaded.format, "sha256": loaded.sha256,
        "schema": schema.to_dict(), "class_names": _class_names(class_names, loaded)}
    if weights is not None:
        source["model_sha256"] = blobs.put(path)
        source["weights_sha256"] = blobs.put(Path(weights))
    elif stored_sha != loaded.sha256:  # pragma: no cover - the two digests are one rule
        raise InvalidInputError("model", "stored under another digest than its own",
                                stored_sha)
    if loaded.trusted_types:
        source["trusted_types"] = list(loaded.trusted_types)
    if loaded.trust_pickle:
        source["trust_pickle"] = True
    if output_space is not None:
        source["output_space"] = output_space
    if data is not None:
        source["data_sha256"] = blobs.put(Path(data))
        source["data_format"] = table_format(Path(data))
    if policy is None:
        policy = default_policy(loaded, source["class_names"], adverse_class, schema)
    elif adverse_class is not None:
        raise InvalidInputError("adverse_class", "is given by the policy when there is one",
                                adverse_class)
    spec: dict[str, Any] = {"model_id": model_id, "version": version, "source": source,
                            "policy": dict(policy)}
    if card is not None:
        spec["card"] = dict(card)
    if anchors is not None:
        spec["anchors"] = anchors
    return register_model(ctx, spec)


def default_policy(loaded: LoadedModel, class_names: Sequence[str],
                   adverse_class: str | None, schema: FeatureSchema) -> dict[str, Any]:
    """An explanation policy for a model registered without one: TreeSHAP for tree
    ensembles, Integrated Gradients for differentiable models, exact Shapley values over
    the schema's features otherwise (exact Owen values over its declared feature groups
    where those would cost one decision too much), or permutation SHAP (with its error
    bound) where neither fits (:func:`~xai_sandbox.workflows.explain.shapley_method`);
    every class labelled by its own
    name."""
    if adverse_class not in class_names:
        raise InvalidInputError("adverse_class", "must name the class that is adverse to the "
                                f"person, one of {list(class_names)} (or give a policy)",
                                adverse_class)
    adapter = loaded.adapter
    method = ("tree_shap" if getattr(adapter, "is_tree_ensemble", False)
              else "integrated_gradients" if adapter.differentiable else "exact_shapley")
    if method == "exact_shapley":   # file models have no background: one reference row
        sizes = [len(members) for _, members in schema.players()]
        if shapley_method(sizes, 1, differentiable=False)[0] == "permutation_shap":
            method = "permutation_shap"
    return {"methods": [method], "adverse_class": adverse_class,
            "outcome_labels": {c: {"en": c, "zh": c} for c in class_names}}


def _local(model: str | Path, tracking_uri: str | None) -> Path:
    text = str(model)
    if text.startswith(("models:/", "runs:/")):
        from xai_sandbox.models.formats.mlflow_models import resolve_uri

        return resolve_uri(text, tracking_uri)
    path = Path(model)
    return path.parent if path.name == "MLmodel" else path


def _class_names(given: Sequence[str] | None, loaded: LoadedModel) -> list[str]:
    names = list(given) if given is not None else list(loaded.class_names)
    if len(names) < 2 or not all(isinstance(c, str) and c for c in names) or len(
            set(names)) != len(names):
        raise InvalidInputError("class_names", "must name at least two distinct classes "
                                "(the file does not name them)", names)
    width = loaded.adapter.predict(np.zeros((1, loaded.adapter.sample_shape[0]))
                                   ).shape[1] if loaded.adapter.sample_shape else None
    if width is not None and width not in (1, len(names)):
        raise InvalidInputError("class_names", f"must name the model's {width} outputs",
                                names)
    return names


