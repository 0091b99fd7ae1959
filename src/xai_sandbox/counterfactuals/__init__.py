"""Counterfactual explanations: the smallest feasible changes that flip a decision."""

from xai_sandbox.counterfactuals.constraints import ActionConstraints
from xai_sandbox.counterfactuals.plausibility import neighbour_distance, ood_scores
from xai_sandbox.counterfactuals.search import (
    NO_FEASIBLE_CHANGE,
    Change,
    Counterfactual,
    CounterfactualSet,
    find_counterfactuals,
)

__all__ = ["NO_FEASIBLE_CHANGE", "ActionConstraints", "Change", "Counterfactual",
           "CounterfactualSet", "find_counterfactuals", "neighbour_distance", "ood_scores"]
