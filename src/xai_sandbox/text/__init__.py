"""Transformer and LLM explanations: token attributions, attention, probing, patching,
triggers, self-explanation checks and sparse features."""
