"""Transformer and LLM explanations: token attributions, attention, probing, patching,
triggers, self-explanation checks and sparse features.

Importing this package registers the text methods (:mod:`xai_sandbox.text.methods`) in the
one registry of :mod:`xai_sandbox.explainers`, so that
``explain(text_model, texts, method=...)`` runs them.
"""

from xai_sandbox.text import methods as _methods  # noqa: F401  (importing registers them)
