"""Ad hoc explanations of inputs that are not decisions (operator, admin)."""

from __future__ import annotations

from typing import Any

import numpy as np

import xai_sandbox.service.metrics as metrics
from xai_sandbox.service.deps import RT, Who, allowed, limit_reads
from xai_sandbox.service.schemas import (
    AdhocExplanation,
    ExplainRequest,
    TextExplainRequest,
    TextExplanation,
)
from xai_sandbox.service.strict import resource_router

router = resource_router("decisions")


@router.post("/v1/explain", dependencies=[allowed("operator", "admin")],
             response_model=AdhocExplanation)
def explain_adhoc(body: ExplainRequest, rt: RT, who: Who) -> dict[str, Any]:
    """Explain an input that is not a decision, with the provenance chain (input, layer
    activations, gradient weighting, anchor match, regulatory rule, hash) and a receipt
    for the log entry that commits to input and result."""
    limit_reads(rt, who)
    served = rt.decider.model(body.model_id, body.version)
    features = body.input
    if isinstance(features, list):
        x = served.model.adapter.validate_inputs(np.asarray([features], dtype=np.float64),
                                                 "input")
        features = served.schema.decode(x)[0]
    with rt.compute_slots:
        result = rt.decider.explain_adhoc(model_id=body.model_id, version=body.version,
                                          features=features, method=body.method,
                                          target=body.target, params=body.params,
                                          actor=who.name)
    metrics.EXPLANATIONS.labels(body.method, "ok").inc()
    return result


@router.post("/v1/explain/text", dependencies=[allowed("operator", "admin")],
             response_model=TextExplanation)
def explain_text(body: TextExplainRequest, rt: RT, who: Who) -> dict[str, Any]:
    """Explain a text with a built-in text model: token and word attributions (integrated
    gradients on the word embeddings, with its completeness error), phrase anchors with
    their regulations, alerts after a streak of risky texts, and a receipt for the log
    entry that commits to the text and the result."""
    limit_reads(rt, who)
    with rt.compute_slots:
        result = rt.text.explain(model_id=body.model_id, text=body.text, method=body.method,
                                 target=body.target, actor=who.name)
    metrics.EXPLANATIONS.labels(f"text:{body.method}", "ok").inc()
    return result
