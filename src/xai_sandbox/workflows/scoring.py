"""Score one applicant: validate it against the model's schema, then apply the policy's
threshold to the adverse class's probability."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from xai_sandbox.errors import SchemaError
from xai_sandbox.workflows.served import ServedModel

__all__ = ["outcomes", "score"]


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
    decided, adverse_rows = outcomes(served, probs[None])
    outcome, adverse = names[int(decided[0])], bool(adverse_rows[0])
    p_adverse = float(probs[names.index(policy.adverse_class)])
    output = {"score": p_adverse, "score_meaning": f"probability of '{policy.adverse_class}'",
              "decision": outcome, "label": dict(policy.outcome_labels[outcome]),
              "adverse": adverse, "threshold": policy.threshold,
              "confidence": float(probs[names.index(outcome)]),
              "probabilities": {n: float(p) for n, p in zip(names, probs, strict=True)},
              "policy_version": policy.version, "automation": policy.automation}
    return x, output


def outcomes(served: ServedModel, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The decided class of each row of class probabilities and whether it is adverse:
    the adverse class when its probability reaches the policy's threshold, else the most
    probable other class."""
    adverse_idx = served.model.class_names.index(served.policy.adverse_class)
    adverse = probs[:, adverse_idx] >= served.policy.threshold
    others = probs.copy()
    others[:, adverse_idx] = -np.inf
    return np.where(adverse, adverse_idx, others.argmax(axis=1)), adverse
