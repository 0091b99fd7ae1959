"""Universal adversarial triggers: the quarterly red-team search (Wallace et al. 2019).

A *universal trigger* is a short token sequence that, inserted into **any** input, drives
the model to a target class (a classifier) or to a target continuation (a causal LM). The
search follows Eric-Wallace/universal-triggers (``attacks.hotflip_attack`` and
``utils.get_best_candidates``):

1. Start from ``length`` copies of a neutral token (``"the the the"``), inserted right after
   CLS/BOS in every input.
2. On a fresh batch each iteration, take the gradient ``g_i`` of the targeted loss (mean
   cross-entropy of the target class; for a causal LM ``-mean log p(target | trigger +
   prompt)``) with respect to the embedding at each trigger slot.
3. Score every allowed token ``w`` for slot ``i`` by the first-order change in loss
   ``(E_w - E_{t_i}) . g_i`` and keep the ``n_candidates`` most negative.
4. Left-to-right beam search: replace one slot at a time by each candidate and keep the
   ``beam`` triggers with the lowest **exact** batch loss (real forward passes; the
   unchanged trigger is always among the options).
5. Stop when the loss on all the search texts has not improved for ``patience`` iterations.

Why not optimise token ids directly: an id is a categorical index; the embedding lookup has
no gradient with respect to it and ids 1234 and 1235 are unrelated tokens, so rounding an
Adam-updated float id optimises nothing. The discrete problem is scored in embedding space
and confirmed with forward passes, as above.

Known limit of the first-order step: a model that detects a token through a sharp
attention match can give that token a flat (even wrong-signed) linear score from a neutral
starting trigger. In a 2-layer CLS-pooled BERT with a planted backdoor the backdoor ranked
72nd of 77 tokens by ``(E_w - E_t) . g`` while its exact loss was the lowest; the same
backdoor in a mean-pooled encoder ranks first. The exact re-scoring cannot recover a token
that never becomes a candidate, so raise ``n_candidates`` (up to the whole vocabulary when it
is small) before reading "no trigger found" as "no backdoor".

The vocabulary (:func:`trigger_vocabulary`) leaves out special tokens, tokens that change on
a decode-encode round trip, label-indicative words (a blacklist plus the class names) and,
unless asked for, subword continuations; every candidate trigger must also survive the round
trip as a whole, so its decoded text is what an attacker would type.

:func:`evaluate_trigger` is the report: target rate and mean target probability on held-out
inputs clean, with the trigger, and with random triggers of the same length from the same
vocabulary, and ``delta = rate(trigger) - rate(random)`` with a bootstrap interval over the
held-out inputs.
"""

from __future__ import annotations

from xai_sandbox.text.triggers.search import (
    TriggerResult,
    evaluate_trigger,
    search_trigger,
    trigger_table,
)
from xai_sandbox.text.triggers.vocabulary import trigger_vocabulary

__all__ = [
    "TriggerResult",
    "evaluate_trigger",
    "search_trigger",
    "trigger_table",
    "trigger_vocabulary",
]
