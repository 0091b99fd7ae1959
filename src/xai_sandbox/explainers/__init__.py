"""Explainers: one registry, one verb (:func:`explain`), one result type (:class:`Explanation`)."""

from xai_sandbox.explainers import (  # noqa: F401  (importing registers them)
    cam,
    gradients,
    integrated,
    perturbation,
    shapley,
    wrappers,
)
from xai_sandbox.explainers.base import (
    EXPLAINERS,
    Explainer,
    Problem,
    Result,
    available_methods,
    explain,
    get_explainer,
    register_explainer,
)
from xai_sandbox.explainers.explanation import Explanation

__all__ = ["EXPLAINERS", "Explainer", "Explanation", "Problem", "Result", "available_methods",
           "explain", "get_explainer", "register_explainer"]
