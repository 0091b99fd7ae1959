"""Score one applicant: validate it against the model's schema, then apply the policy's
threshold to the adverse class's probability."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from xai_sandbox.errors import SchemaError
from xai_sandbox.workflows.served import ServedModel

__all__ = ["score"]


def score(served: ServedModel, features: Mapping[str, Any]
          ) -> tuple[np.ndarray, dict[str, Any]]:
    """Validate one applicant against the schema and score it."""
    if not isinstance(features, Mapping):
        raise SchemaError("features", "must be a mapping of feature name to value",
                          type(features).__name__)
    try:
        x = served.schema.encode(features)
    except SchemaError as exc:  # name the field as the caller sent it
        where = exc.parameter.replace("rows[0]", "features", 1)
        raise SchemaError(where, exc.rule, exc.value) from None
    probs = served.model.probabilities(x)[0]
    names = served.model.class_names
    policy = served.policy
    adverse_idx = names.index(policy.adverse_class)
    p_adverse = float(probs[adverse_idx])
    adverse = p_adverse >= policy.threshold
    if adverse:
        outcome = policy.adverse_class
    else:
        others = [i for i in np.argsort(-probs) if i != adverse_idx]
        outcome = names[int(others[0])]
    output = {"score": p_adverse, "score_meaning": f"probability of '{policy.adverse_class}'",
              "decision": outcome, "label": dict(policy.outcome_labels[outcome]),
              "adverse": adverse, "threshold": policy.threshold,
              "confidence": float(probs[names.index(outcome)]),
              "probabilities": {n: float(p) for n, p in zip(names, probs, strict=True)},
              "policy_version": policy.version, "automation": policy.automation}
    return x, output
