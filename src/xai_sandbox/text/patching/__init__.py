"""Activation patching (causal mediation) between a clean and a corrupted prompt.

The clean prompt gives the answer ``target``; the corrupted one, built by symmetric token
replacement (swap one name, keyword or value) and of the same token length, pushes the model
towards ``foil``. The metric is the logit difference ``m = logit(target) - logit(foil)``: a
classifier's two class logits, or a causal LM's two next-token logits at the answer
position (the last non-pad token). Every *site* - a component of one block at some
positions, optionally one attention head - is then patched:

* ``mode="denoise"`` runs the corrupted prompt with the site set to its clean value and
  scores ``(m_patched - m_corr) / (m_clean - m_corr)``: 0 means the site restores nothing,
  1 that it alone restores the clean answer (*sufficiency*);
* ``mode="noise"`` runs the clean prompt with the site set to its corrupted value and
  scores ``(m_clean - m_patched) / (m_clean - m_corr)``: the fraction of the clean-minus-
  corrupted gap that corrupting the site destroys; 0 means the model does not need the
  site, 1 that corrupting it alone gives the corrupted answer (*necessity*).

Both are normalised so that 0 and 1 are the two prompts' own metrics, and 1 always means
"this site carries the difference". They are not clipped: a site can overshoot (above 1) or
push the other way (below 0), and that is worth seeing.

Components (per block ``l``; ``model.blocks`` says which module each one is):

``resid_pre``   the residual stream entering block ``l`` (the block's input, through the
                hook sandbox's :func:`~xai_sandbox.models.sandbox.intervene`: its hidden
                states come as the first positional argument or as the ``hidden_states``
                keyword - both are handled);
``resid_post``  the residual stream leaving block ``l`` (its output);
``attn_out``    what the attention adds, the output of ``blocks.attn_out[l]``;
``mlp_out``     what the MLP adds, the output of ``blocks.mlp_out[l]``;
``head``        one head's slice of the *input* of ``blocks.head_in[l]`` (the attention's
                output projection), patched at all positions at once (TransformerLens's
                ``attn_head_out_all_pos``): a ``[n_layers, n_heads]`` map;
``head_by_pos`` the same per position: ``[n_layers, n_heads, T]``.

The position components give ``[n_layers, T]`` maps. Sites are patched many at a time: the
base prompt is repeated ``batch_size`` times and row ``b`` of the batch gets site ``b``, so
a forward pass handles up to ``batch_size`` sites (TransformerLens and ROME run one forward
per site; :func:`patch_one_by_one` does that too and is the oracle of the tests).

Identical clean and corrupted token ids are *degenerate*: no activation differs, so no patch
can change anything; every score is 0 by definition and ``degenerate`` is set. Different
prompts whose metrics nearly coincide (``|m_clean - m_corr| < min_gap``) make the
normalisation meaningless and raise :class:`InvalidInputError` naming ``corrupted``.
"""

from __future__ import annotations

from xai_sandbox.text.patching.engine import patch_sites
from xai_sandbox.text.patching.maps import PatchingResult, grid_sites, patch, patch_one_by_one
from xai_sandbox.text.patching.pair import COMPONENTS, Site, SiteScores, logit_difference

__all__ = [
    "COMPONENTS",
    "PatchingResult",
    "Site",
    "SiteScores",
    "grid_sites",
    "logit_difference",
    "patch",
    "patch_one_by_one",
    "patch_sites",
]
