"""Self-explanation consistency: does what a model *says* decided its answer agree with
what the gradients and the removal tests say did?

The model is asked for an **answer-first JSON** self-explanation (LLM.md 2.6)::

    {"label": "<one of the labels>", "evidence": ["<exact quotes of the input>"],
     "confidence": <number in [0, 1]>}

and the answer is checked in four independent ways.

1. **Format** (:func:`parse_self_explanation`): the first JSON object in the raw answer is
   validated with pydantic against :data:`SELF_EXPLANATION_SCHEMA` plus the label set. A
   parse or schema failure gives ``valid=False`` with the reason; nothing is retried, and the
   caller counts the failure rate (:func:`summarise`). Extra keys are ignored; the label
   must match one of the labels exactly (case included); each quote is stripped of
   surrounding whitespace; duplicate quotes count once.
2. **Grounding**: each quote is searched for verbatim (case-sensitive) in the input; a
   quote found is mapped to the character spans of **all** its occurrences (a quote does
   not say which occurrence it means, so all are treated as stated evidence); a quote not
   found is **hallucinated** evidence and is counted as its own inconsistency rate.
3. **Agreement with integrated gradients** (:func:`agreement`): IG of the stated label's
   score (a classifier's logit; a causal LM's ``log p(label tokens | prompt)``) with respect
   to the **input-text tokens only** (instruction and template tokens are left out), summed
   into the whitespace-separated words of the input; precision@k and recall@k of the
   evidence words among IG's top-k words (signed scores: evidence claims support for the
   answer; ties broken by position), and AUPRC of the IG scores with the evidence words as
   positives, each against a permutation null of random word sets of the same size.
4. **Faithfulness without treating IG as the truth** (ERASER, DeYoung et al. 2020, and
   Madsen et al. 2024): comprehensiveness ``p(y|x) - p(y|x without r)`` and sufficiency
   ``p(y|x) - p(y|r only)`` of the stated evidence and of IG's top-k words at the same k,
   AOPC over IG's top 1/5/10/20/50 % of words, and **redaction**: the evidence words are
   deleted from the input, the model is asked again, and a change of label is recorded.

How a removed word is represented changes the numbers (ERASER), so it is fixed here and
reported in every result (``removal``):

- **classifier**: the removed words' tokens are replaced by the tokenizer's PAD token and
  the length is kept (the same PAD that is the IG baseline);
- **causal LM**: the removed words are **deleted** from the input text (with one adjoining
  run of whitespace) and the prompt is rebuilt and re-tokenised; ``p(y|x)`` is the
  probability of the label's tokens after the answer prefix ``{"label": "``, renormalised
  over the label set.

Redaction (re-asking) always deletes the words from the text, since the re-asked prompt
holds text; ``y`` is the label the model *stated*, the decision being explained.
"""

from __future__ import annotations

from xai_sandbox.text.selfexplain.agreement import (
    agreement,
    aopc,
    comprehensiveness,
    delete_spans,
    sufficiency,
)
from xai_sandbox.text.selfexplain.check import (
    LabelScorer,
    Redaction,
    SelfExplanationReport,
    check_self_explanation,
    parse_rate,
)
from xai_sandbox.text.selfexplain.parsing import (
    ANSWER_PREFILL,
    AOPC_THRESHOLDS,
    SELF_EXPLANATION_SCHEMA,
    SelfExplanation,
    evidence_mask,
    parse_self_explanation,
    self_explanation_schema,
)
from xai_sandbox.text.selfexplain.prompts import (
    SelfExplanationPrompt,
    build_prompt,
    constrained_answerer,
    greedy_answerer,
)
from xai_sandbox.text.selfexplain.summary import summarise

__all__ = [
    "ANSWER_PREFILL",
    "AOPC_THRESHOLDS",
    "SELF_EXPLANATION_SCHEMA",
    "LabelScorer",
    "Redaction",
    "SelfExplanation",
    "SelfExplanationPrompt",
    "SelfExplanationReport",
    "agreement",
    "aopc",
    "build_prompt",
    "check_self_explanation",
    "comprehensiveness",
    "constrained_answerer",
    "delete_spans",
    "evidence_mask",
    "greedy_answerer",
    "parse_rate",
    "parse_self_explanation",
    "self_explanation_schema",
    "sufficiency",
    "summarise",
]
