"""Sparse features: TopK sparse autoencoders on a transformer's activations.

A sparse autoencoder (SAE) rewrites an activation ``a`` (one token's residual stream, say)
as a sparse, non-negative combination of learned unit directions plus a bias, and the
features it learns are the units an explanation speaks in. This module gives:

* :class:`TopKSAE` and :func:`train_sae`, a small trainer for classifiers (no public SAEs
  exist for BERT-style encoders): ``x_hat = W_dec . TopK(W_enc (x - b_dec) + b_enc) + b_dec``
  with unit-norm decoder directions, MSE loss and dead-feature resampling (Gao et al. 2024;
  Bricken et al. 2023).
* :func:`collect_activations`, which captures a block's input or output through hooks.
* :func:`spliced`, which puts an SAE into the model *with its error term*:
  ``a -> x_hat + (a - x_hat)`` leaves the model's output unchanged while exposing the feature
  activations ``f`` as a tensor that takes gradients. :func:`feature_attribution`
  attributes a target logit to each feature by gradient x activation through the splice,
  and :func:`ablate_features` checks the attribution by zero-ablating features (decoding
  without them and adding the error term back).
* :func:`load_pretrained_sae`, which loads a pretrained SAE with SAELens (the optional
  ``sae`` extra) and maps its hook to this module's sites.

Sites and Hugging Face hidden states
------------------------------------
``site="resid_pre"`` at ``layer=L`` is the *input* of block ``L``: TransformerLens's
``blocks.L.hook_resid_pre``, which is ``hidden_states[L]`` of a Hugging Face forward with
``output_hidden_states=True`` (``hidden_states[0]`` is the embedding output).
``site="resid_post"`` is the block's *output*: ``hidden_states[L + 1]``, except after the last
block of a pre-norm model (GPT-2, Llama), whose last hidden state has the final norm applied.
``"attn_out"`` and ``"mlp_out"`` are what the attention and the MLP add to the residual stream
(``hook_attn_out``, ``hook_mlp_out``).

Caveat for users: independent evaluations (MIB; Kantamneni et al. 2025) found that SAE
features often do not beat neurons or linear probes; the attributions here are checked by
ablation, which is the claim they support, and no more.
"""

from __future__ import annotations

from xai_sandbox.text.sae.coder import SparseCoder, TopKSAE
from xai_sandbox.text.sae.features import (
    AblationResult,
    SpliceFidelity,
    ablate_features,
    feature_attribution,
    splice_fidelity,
)
from xai_sandbox.text.sae.pretrained import (
    PretrainedSAE,
    SAESite,
    load_pretrained_sae,
    sae_site_from_config,
)
from xai_sandbox.text.sae.splice import Splice, collect_activations, spliced
from xai_sandbox.text.sae.training import SAETrainResult, train_sae

__all__ = [
    "AblationResult",
    "PretrainedSAE",
    "SAESite",
    "SAETrainResult",
    "SparseCoder",
    "Splice",
    "SpliceFidelity",
    "TopKSAE",
    "ablate_features",
    "collect_activations",
    "feature_attribution",
    "load_pretrained_sae",
    "sae_site_from_config",
    "splice_fidelity",
    "spliced",
    "train_sae",
]
