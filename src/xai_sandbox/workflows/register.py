"""Register a model: load it from its spec's source, check its anchors against its
schema, record it (with its spec, so a restart serves it again) and serve it."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from xai_sandbox.errors import InvalidInputError
from xai_sandbox.monitor.calibrate import latest_thresholds
from xai_sandbox.reports.policy import ExplanationPolicy, ModelCard
from xai_sandbox.semantics.anchors import load_anchors
from xai_sandbox.semantics.fairness import likely_proxies
from xai_sandbox.workflows.context import Context
from xai_sandbox.workflows.files import load_file_source
from xai_sandbox.workflows.served import ServedModel, load_source

__all__ = ["load_registered", "register_model"]

_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def register_model(ctx: Context, spec: Mapping[str, Any]) -> ServedModel:
    """Load, register, record and serve a model from its spec.

    ``spec``: ``model_id``, ``version``, ``source`` (``{"kind": "builtin", "name":
    ...}``, ``{"kind": "xgboost_json", "model": ..., "schema": ..., "class_names":
    ..., "training_rows": [...]}``, or ``{"kind": "file", ...}`` naming a stored model
    file, as :func:`~xai_sandbox.workflows.upload.register_file` writes it), ``policy``
    and optionally ``card``.
    """
    if not isinstance(spec, Mapping):
        raise InvalidInputError("spec", "must be a mapping", spec)
    model_id, version = str(spec.get("model_id")), str(spec.get("version", "1"))
    source = spec.get("source")
    if not isinstance(source, Mapping):
        raise InvalidInputError("source", "must be a mapping with a 'kind'", source)
    for name, value in (("model_id", spec.get("model_id")),
                        ("version", spec.get("version", "1"))):
        if not isinstance(value, str) or not _MODEL_ID.match(value):
            raise InvalidInputError(name, "must be 1-128 of letters, digits, '.', '_', "
                                    "'-'", value)
    model, data, stored_source = (load_file_source(ctx, source, model_id, version)
                                  if source.get("kind") == "file"
                                  else load_source(source, model_id, version))
    policy = ExplanationPolicy.from_dict(spec.get("policy"), model.class_names)
    card = ModelCard.from_dict(spec.get("card"))
    anchors = None
    if spec.get("anchors") is not None:
        if not isinstance(spec["anchors"], str | Mapping):
            raise InvalidInputError("anchors", "must name a shipped anchor library or "
                                    "give one", spec["anchors"])
        anchors = load_anchors(spec["anchors"])
        if model.schema is not None:
            anchors.check_schema(model.schema)
        calibrated = latest_thresholds(ctx.store, f"{model_id}@{version}")
        if calibrated:
            anchors = anchors.with_thresholds(calibrated)
    stored = {"model_id": model_id, "version": version, "source": stored_source,
              "policy": policy.to_dict(), "card": card.to_dict()}
    if anchors is not None:
        stored["anchors"] = spec["anchors"]
    key, _ = ctx.store.register_model(model_id, version, model.fingerprint,
                                       schema=model.schema.to_dict() if model.schema
                                       else None, spec=stored)
    proxies: dict[str, list[str]] = {}
    tests: dict[str, list[dict[str, Any]]] = {}
    if data is not None and model.schema is not None and len(data) >= 50:
        found = likely_proxies(model.schema, model.schema.decode(data[:5000]))
        proxies = {p: [n for n, _ in found[p]] for p in found}
        tests = {p: [f.to_dict() for f in found[p]] for p in found}
    served = ServedModel(key=key, model=model, policy=policy, card=card, spec=stored,
                         data=data, anchors=anchors, proxies=proxies, proxy_tests=tests)
    if anchors is not None:  # streaks continue across a restart
        for decision_id, body in ctx.store.recent_reports(key, ctx.streaks.n):
            if body.get("anchors"):
                ctx.streaks.update(key, decision_id, body["anchors"]["matches"],
                                    replay=True)
    ctx.serve(served)
    return served

def load_registered(ctx: Context) -> list[str]:
    """Serve again every model recorded with a spec (after a restart)."""
    loaded = []
    for row in ctx.store.models():
        if not row.get("spec_json") or ctx.serves(row["key"]):
            continue
        spec = json.loads(row["spec_json"])
        served = register_model(ctx, spec)
        if served.model.fingerprint != row["fingerprint"]:  # pragma: no cover
            raise InvalidInputError("model", "reloads with another fingerprint", row["key"])
        loaded.append(row["key"])
    return loaded
