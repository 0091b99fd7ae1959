"""The text and LLM methods, registered in the one registry of
:mod:`xai_sandbox.explainers` when :mod:`xai_sandbox.text` is imported.

Each method is a :class:`TextMethod`: a registered :class:`~xai_sandbox.explainers.base.Explainer`
of the ``"text"`` family, whose constructor only stores its parameters. The one verb runs
it on a :class:`~xai_sandbox.text.model.TextModel` and its texts::

    explain(text_model, ["the loan was slow"], method="attention_rollout", residual=0.5)

and returns an :class:`~xai_sandbox.explainers.explanation.Explanation` named after the
method, with its provenance; the methods whose answer is more than attributions (probes,
patching, triggers, self-explanations) carry their full result in ``Explanation.text``.
As for every method, a parameter the method does not have, or an argument of
:func:`~xai_sandbox.explainers.base.explain` it does not use (``target`` for attention,
``baselines`` anywhere), is an :class:`~xai_sandbox.errors.InvalidInputError` naming it.
The functions that do the work are imported when a method runs, so that listing the
methods does not load them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any, ClassVar

from xai_sandbox.errors import (
    ExplanationError,
    InvalidInputError,
    UnknownMethodError,
    UnsupportedModelError,
)
from xai_sandbox.explainers.base import (
    OUTPUT_SPACES,
    Explainer,
    Problem,
    Result,
    methods_of,
    register_explainer,
)
from xai_sandbox.explainers.explanation import Explanation
from xai_sandbox.models.adapters import ModelAdapter
from xai_sandbox.text.model import TextKind, TextModel

__all__ = ["TEXT_METHODS", "TextMethod", "text_method"]

#: The registered text methods: a live view of the one registry.
TEXT_METHODS: MutableMapping[str, type[Explainer]] = methods_of("text")


class TextMethod(Explainer):
    """Base of the text methods: they read a :class:`TextModel` and its texts themselves.

    Subclasses set ``name``, ``summary``, ``needs``, ``model_kind`` (``None`` when both a
    classifier and a causal LM will do) and ``reads`` (``{"target"}`` when the method
    explains a chosen output), store their parameters in ``__init__`` and implement
    :meth:`compute`. A method that samples (``samples``) gets a seed: ``random_state``,
    or 0 when it is ``None``, recorded as the explanation's ``seed``.
    """

    family = "text"
    input_kinds = ()
    reads: ClassVar[frozenset[str]] = frozenset({"target"})
    model_kind: ClassVar[TextKind | None] = None

    def run(self, problem: Problem) -> Result:
        raise self._not_an_array_method(type(problem.adapter).__name__)

    def check(self, adapter: ModelAdapter) -> None:
        raise self._not_an_array_method(type(adapter).__name__)

    def _not_an_array_method(self, got: str) -> UnsupportedModelError:
        return UnsupportedModelError("method", f"{self.name} explains a TextModel and its "
                                     "texts: explain(text_model, texts, method=...)", got)

    def unused_here(self, given: Mapping[str, Any]) -> dict[str, str]:
        """Parameters the caller gave that this run would not use, each with why."""
        return {}

    def explain_model(self, model: Any, inputs: Any, *, random_state: int | None,
                      given: Mapping[str, Any]) -> Explanation:
        if not isinstance(model, TextModel):
            raise UnsupportedModelError("model", f"{self.name} explains a TextModel",
                                        type(model).__name__)
        if self.model_kind is not None and model.kind != self.model_kind:
            raise UnsupportedModelError("model", f"{self.name} explains a {self.model_kind}",
                                        model.kind)
        for name in sorted(given):
            if name not in self.uses():
                raise InvalidInputError(name, f"{self.name} does not use {name}",
                                        given[name])
        unused = self.unused_here(given)
        if unused:
            name = sorted(unused)[0]
            raise InvalidInputError(name, unused[name], getattr(self, name, None))
        seed = (0 if random_state is None else random_state) if self.samples else None
        explanation = self.compute(model, inputs, target=given.get("target"), seed=seed)
        if explanation.output_space not in OUTPUT_SPACES:
            raise ExplanationError(f"{self.name}: the result's output_space must be one of "
                                   f"{sorted(OUTPUT_SPACES)}; got {explanation.output_space!r}")
        return dataclasses.replace(explanation, method=self.name,
                                   seed=seed if self.samples else random_state)

    def compute(self, model: TextModel, inputs: Any, *, target: Any, seed: int | None
                ) -> Explanation:
        """Run the method (``seed`` is set for the methods that sample)."""
        raise NotImplementedError

    def _required_target(self, target: Any) -> Any:
        if target is None:
            raise InvalidInputError("target", f"is required by {self.name}", None)
        return target


def text_method(name: str) -> type[Explainer]:
    """A registered text method; an unknown name lists the valid ones."""
    if name not in TEXT_METHODS:
        raise UnknownMethodError("method", f"must be one of {sorted(TEXT_METHODS)}", name)
    return TEXT_METHODS[name]


# ---------------------------------------------------------------------------- attributions
class _TokenAttribution(TextMethod):
    needs = "classifier"
    model_kind = "classifier"
    rule: ClassVar[str]

    def __init__(self, foil: Any = None) -> None:
        self.foil = foil

    def compute(self, model: TextModel, inputs: Any, *, target: Any, seed: int | None
                ) -> Explanation:
        from xai_sandbox.text.attribution import token_attributions

        return token_attributions(model, inputs, method=self.rule,  # type: ignore[arg-type]
                                  target=target, foil=self.foil)


@register_explainer
class TextIntegratedGradients(_TokenAttribution):
    name = "text_integrated_gradients"
    summary = ("IG on the word embeddings (specials kept, rest PAD), word level, "
               "completeness error")
    rule = "integrated_gradients"

    def __init__(self, foil: Any = None, n_steps: int = 50, tolerance: float = 0.05,
                 internal_batch_size: int | None = None) -> None:
        super().__init__(foil)
        self.n_steps = n_steps
        self.tolerance = tolerance
        self.internal_batch_size = internal_batch_size

    def compute(self, model: TextModel, inputs: Any, *, target: Any, seed: int | None
                ) -> Explanation:
        from xai_sandbox.text.attribution import token_attributions

        return token_attributions(model, inputs, method="integrated_gradients", target=target,
                                  foil=self.foil, n_steps=self.n_steps,
                                  tolerance=self.tolerance,
                                  internal_batch_size=self.internal_batch_size)


@register_explainer
class TextGradientXInput(_TokenAttribution):
    name = "text_gradient_x_input"
    summary = "gradient x input on the word embeddings"
    rule = "gradient_x_input"


@register_explainer
class TextOcclusion(_TokenAttribution):
    name = "text_occlusion"
    summary = "each token replaced by PAD in turn"
    rule = "occlusion"


@register_explainer
class GenerationIntegratedGradients(TextMethod):
    """``target`` is the continuation to explain (the greedy one when ``None``)."""

    name = "generation_integrated_gradients"
    summary = ("IG per generated token over the prompt, and the sequence view; contrastive "
               "with a foil token")
    needs = "causal LM"
    model_kind = "causal_lm"

    def __init__(self, max_new_tokens: int = 8, foil: str | None = None, n_steps: int = 50,
                 tolerance: float = 0.05, internal_batch_size: int | None = 64,
                 max_steps: int = 800) -> None:
        self.max_new_tokens = max_new_tokens
        self.foil = foil
        self.n_steps = n_steps
        self.tolerance = tolerance
        self.internal_batch_size = internal_batch_size
        self.max_steps = max_steps

    def unused_here(self, given: Mapping[str, Any]) -> dict[str, str]:
        return self._unless("target" not in given, ["max_new_tokens"],
                            "max_new_tokens is used only to generate the continuation when "
                            "no target is given")

    def compute(self, model: TextModel, inputs: Any, *, target: Any, seed: int | None
                ) -> Explanation:
        from xai_sandbox.text.attribution import generation_attributions

        return generation_attributions(
            model, inputs, target=target, max_new_tokens=self.max_new_tokens, foil=self.foil,
            n_steps=self.n_steps, tolerance=self.tolerance,
            internal_batch_size=self.internal_batch_size, max_steps=self.max_steps)


# ---------------------------------------------------------------------------- attention
@register_explainer
class RawAttention(TextMethod):
    name = "raw_attention"
    summary = "attention weights per layer and head"
    needs = "eager attention"
    reads = frozenset()

    def __init__(self, layer: int = -1, position: int | None = None,
                 head_reduce: str = "mean") -> None:
        self.layer = layer
        self.position = position
        self.head_reduce = head_reduce

    def compute(self, model: TextModel, inputs: Any, *, target: Any, seed: int | None
                ) -> Explanation:
        from xai_sandbox.text.attention import raw_attention

        return raw_attention(model, inputs, layer=self.layer, position=self.position,
                             head_reduce=self.head_reduce)  # type: ignore[arg-type]


@register_explainer
class AttentionRollout(TextMethod):
    name = "attention_rollout"
    summary = ("Abnar and Zuidema's rollout with the residual; receptive-field normalised "
               "for decoders")
    needs = "eager attention"
    reads = frozenset()

    def __init__(self, position: int | None = None, head_reduce: str = "mean",
                 residual: float = 0.5, drop_sink: bool = False) -> None:
        self.position = position
        self.head_reduce = head_reduce
        self.residual = residual
        self.drop_sink = drop_sink

    def compute(self, model: TextModel, inputs: Any, *, target: Any, seed: int | None
                ) -> Explanation:
        from xai_sandbox.text.attention import attention_rollout

        return attention_rollout(model, inputs, position=self.position,
                                 head_reduce=self.head_reduce,  # type: ignore[arg-type]
                                 residual=self.residual, drop_sink=self.drop_sink)


# ---------------------------------------------------------------------------- probes
@register_explainer
class LinearProbe(TextMethod):
    """``labels`` (one per text) are what the probes read off each layer."""

    name = "linear_probe"
    summary = ("per-layer probes with majority, random-model and control-task baselines")
    needs = "hidden states"
    reads = frozenset()
    samples = True

    def __init__(self, labels: Any, groups: Any = None, test_size: float = 0.3,
                 controls: bool = True, pool: str = "auto", batch_size: int = 32,
                 n_bootstrap: int = 1000, confidence: float = 0.95,
                 cs: Sequence[float] | None = None, control_labels: Any = None,
                 random_model: TextModel | None = None) -> None:
        self.labels = labels
        self.control_labels = control_labels
        self.random_model = random_model
        self.groups = groups
        self.test_size = test_size
        self.controls = controls
        self.pool = pool
        self.batch_size = batch_size
        self.n_bootstrap = n_bootstrap
        self.confidence = confidence
        self.cs = cs

    def compute(self, model: TextModel, inputs: Any, *, target: Any, seed: int | None
                ) -> Explanation:
        from xai_sandbox.text.probing import DEFAULT_CS, probe_explanation, probe_layers

        report = probe_layers(
            model, inputs, self.labels, groups=self.groups, test_size=self.test_size,
            random_state=0 if seed is None else seed, controls=self.controls,
            control_labels=self.control_labels, random_model=self.random_model,
            pool=self.pool,  # type: ignore[arg-type]
            batch_size=self.batch_size, n_bootstrap=self.n_bootstrap,
            confidence=self.confidence, cs=DEFAULT_CS if self.cs is None else self.cs)
        return probe_explanation(report, model)


# ---------------------------------------------------------------------------- patching
@register_explainer
class ActivationPatching(TextMethod):
    """``inputs`` is the clean prompt, ``target`` its answer, ``corrupted`` the prompt that
    pushes the model to ``foil``; ``values`` is the map of ``component``."""

    name = "activation_patching"
    summary = "residual, attention, MLP and per-head patching, batched sites"
    needs = "transformer blocks"

    def __init__(self, corrupted: str, foil: Any, sites: Any = None, mode: str = "denoise",
                 batch_size: int | str = "auto", add_special_tokens: bool = True,
                 min_gap: float = 1e-4, component: str = "resid_pre") -> None:
        self.corrupted = corrupted
        self.foil = foil
        self.sites = sites
        self.mode = mode
        self.batch_size = batch_size
        self.add_special_tokens = add_special_tokens
        self.min_gap = min_gap
        self.component = component

    def compute(self, model: TextModel, inputs: Any, *, target: Any, seed: int | None
                ) -> Explanation:
        from xai_sandbox.text.patching import patch
        from xai_sandbox.text.patching.pair import DEFAULT_SITES

        result = patch(model, inputs, self.corrupted, target=self._required_target(target),
                       foil=self.foil, sites=DEFAULT_SITES if self.sites is None else self.sites,
                       mode=self.mode,  # type: ignore[arg-type]
                       batch_size=self.batch_size, add_special_tokens=self.add_special_tokens,
                       min_gap=self.min_gap)
        return result.as_explanation(model, self.component)


# ---------------------------------------------------------------------------- triggers
@register_explainer
class UniversalTrigger(TextMethod):
    """``target`` is the class (or continuation) the trigger should drive ``inputs`` to."""

    name = "universal_trigger"
    summary = "HotFlip trigger search with exact beam re-scoring, against random triggers"
    needs = "classifier"
    samples = True

    def __init__(self, length: int = 3, n_candidates: int = 40, beam: int = 3,
                 iterations: int = 20, patience: int = 3, batch_size: int = 32,
                 vocabulary: Any = None, init_token: str | int = "the", tol: float = 1e-4,
                 held_out_texts: Sequence[str] | None = None, n_random: int = 20,
                 n_boot: int = 1000) -> None:
        self.length = length
        self.n_candidates = n_candidates
        self.beam = beam
        self.iterations = iterations
        self.patience = patience
        self.batch_size = batch_size
        self.vocabulary = vocabulary
        self.init_token = init_token
        self.tol = tol
        self.held_out_texts = held_out_texts
        self.n_random = n_random
        self.n_boot = n_boot

    def unused_here(self, given: Mapping[str, Any]) -> dict[str, str]:
        return self._unless(self.held_out_texts is not None, ["n_random", "n_boot"],
                            "the random-trigger evaluation runs only on held_out_texts")

    def compute(self, model: TextModel, inputs: Any, *, target: Any, seed: int | None
                ) -> Explanation:
        from xai_sandbox.text.triggers import search_trigger

        result = search_trigger(
            model, inputs, target=self._required_target(target), length=self.length,
            n_candidates=self.n_candidates, beam=self.beam, iterations=self.iterations,
            patience=self.patience, batch_size=self.batch_size, vocabulary=self.vocabulary,
            random_state=seed, init_token=self.init_token, tol=self.tol,
            held_out_texts=self.held_out_texts, n_random=self.n_random, n_boot=self.n_boot)
        return result.as_explanation(model)


# ---------------------------------------------------------------------------- self-explanation
@register_explainer
class SelfExplanationCheck(TextMethod):
    """``inputs`` is one text, ``labels`` the allowed answers; ``answer`` (a function from
    prompt to raw answer) replaces the model's own decoding."""

    name = "self_explanation"
    summary = ("JSON self-explanation vs IG: agreement, hallucination, comprehensiveness, "
               "sufficiency, redaction")
    needs = "causal LM"
    reads = frozenset()
    samples = True

    def __init__(self, labels: Sequence[str], answer: Any = None,
                 attribution: str = "integrated_gradients", k: int | None = None,
                 n_steps: int = 50, tolerance: float = 0.05,
                 internal_batch_size: int | None = 16, n_permutations: int = 1000,
                 max_new_tokens: int = 96, decoding: str = "constrained") -> None:
        self.labels = labels
        self.answer = answer
        self.attribution = attribution
        self.k = k
        self.n_steps = n_steps
        self.tolerance = tolerance
        self.internal_batch_size = internal_batch_size
        self.n_permutations = n_permutations
        self.max_new_tokens = max_new_tokens
        self.decoding = decoding

    def unused_here(self, given: Mapping[str, Any]) -> dict[str, str]:
        return self._unless(self.answer is None, ["max_new_tokens", "decoding"],
                            "the model's own decoding is replaced by answer")

    def compute(self, model: TextModel, inputs: Any, *, target: Any, seed: int | None
                ) -> Explanation:
        from xai_sandbox.text.selfexplain import check_self_explanation

        report = check_self_explanation(
            model, inputs, self.labels, answer=self.answer,
            attribution=self.attribution,  # type: ignore[arg-type]
            k=self.k, n_steps=self.n_steps, tolerance=self.tolerance,
            internal_batch_size=self.internal_batch_size,
            n_permutations=self.n_permutations, random_state=0 if seed is None else seed,
            max_new_tokens=self.max_new_tokens, decoding=self.decoding)  # type: ignore[arg-type]
        return report.as_explanation(model)


# ---------------------------------------------------------------------------- sparse features
@register_explainer
class SAEFeatures(TextMethod):
    """``sae`` is a sparse coder for the site (a ``TopKSAE`` or a ``PretrainedSAE``)."""

    name = "sae_features"
    summary = "TopK SAE features with the error term spliced in, checked by ablation"
    needs = "trained sparse autoencoder"

    def __init__(self, sae: Any, layer: int, site: str = "resid_post",
                 positions: str = "all", steps: int = 1, top_k: int = 5) -> None:
        self.sae = sae
        self.layer = layer
        self.site = site
        self.positions = positions
        self.steps = steps
        self.top_k = top_k

    def params(self) -> dict[str, Any]:
        out = super().params()
        out["sae"] = {"type": type(self.sae).__name__,
                      "d_in": getattr(self.sae, "d_in", None),
                      "n_features": getattr(self.sae, "n_features", None)}
        return out

    def compute(self, model: TextModel, inputs: Any, *, target: Any, seed: int | None
                ) -> Explanation:
        from xai_sandbox.text.sae import feature_attribution

        return feature_attribution(model, self.sae, inputs, layer=self.layer, target=target,
                                   site=self.site,  # type: ignore[arg-type]
                                   positions=self.positions,  # type: ignore[arg-type]
                                   steps=self.steps, top_k=self.top_k)
