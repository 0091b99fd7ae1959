"""The registry of text and LLM methods, listed by ``xai-sandbox methods``.

Each entry names the function that runs the method (imported only when called, so that
listing methods does not load transformers), what it needs and what it does. Every one of
them returns an :class:`~xai_sandbox.explainers.explanation.Explanation` (directly, or
through its result's ``as_explanation``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from xai_sandbox.errors import UnknownMethodError

__all__ = ["TEXT_METHODS", "TextMethod", "text_method"]


@dataclass(frozen=True)
class TextMethod:
    name: str
    function: str            # "module:function"
    needs: str
    summary: str

    def load(self) -> Callable[..., Any]:
        module, _, attr = self.function.partition(":")
        fn: Callable[..., Any] = getattr(importlib.import_module(module), attr)
        return fn


_T = "xai_sandbox.text."
TEXT_METHODS: dict[str, TextMethod] = {m.name: m for m in (
    TextMethod("text_integrated_gradients", _T + "attribution:token_attributions",
               "classifier", "IG on the word embeddings (specials kept, rest PAD), word "
               "level, completeness error"),
    TextMethod("text_gradient_x_input", _T + "attribution:token_attributions", "classifier",
               "gradient x input on the word embeddings"),
    TextMethod("text_occlusion", _T + "attribution:token_attributions", "classifier",
               "each token replaced by PAD in turn"),
    TextMethod("generation_integrated_gradients", _T + "attribution:generation_attributions",
               "causal LM", "IG per generated token over the prompt, and the sequence view; "
               "contrastive with a foil token"),
    TextMethod("raw_attention", _T + "attention:raw_attention", "eager attention",
               "attention weights per layer and head"),
    TextMethod("attention_rollout", _T + "attention:attention_rollout", "eager attention",
               "Abnar and Zuidema's rollout with the residual; receptive-field normalised "
               "for decoders"),
    TextMethod("linear_probe", _T + "probing:probe_layers", "hidden states",
               "per-layer probes with majority, random-model and control-task baselines"),
    TextMethod("activation_patching", _T + "patching:patch", "transformer blocks",
               "residual, attention, MLP and per-head patching, batched sites"),
    TextMethod("universal_trigger", _T + "triggers:search_trigger", "classifier",
               "HotFlip trigger search with exact beam re-scoring, against random triggers"),
    TextMethod("self_explanation", _T + "selfexplain:check_self_explanation",
               "causal LM", "JSON self-explanation vs IG: agreement, hallucination, "
               "comprehensiveness, sufficiency, redaction"),
    TextMethod("sae_features", _T + "sae:feature_attribution", "trained sparse autoencoder",
               "TopK SAE features with the error term spliced in, checked by ablation"),
)}


def text_method(name: str) -> TextMethod:
    """A registered text method; an unknown name lists the valid ones."""
    if name not in TEXT_METHODS:
        raise UnknownMethodError("method", f"must be one of {sorted(TEXT_METHODS)}", name)
    return TEXT_METHODS[name]
