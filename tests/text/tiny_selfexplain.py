"""Stand-in self-explainers for the tiny planted-keyword classifier (tests/text/tiny.py).

A classifier cannot write JSON, so an *answerer* plays the self-explainer: it reads the
input back out of the prompt, takes the label the classifier itself predicts, and states
evidence by a fixed rule: the planted keyword (the truthful explainer), random words that
are not the keyword (an explainer whose reasons are unrelated to the model), or a fixed
raw answer (malformed or hallucinated JSON).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from tiny import KEYWORD
from xai_sandbox.text.model import TextModel

_INPUT = re.compile(r"<text>\n(.*)\n</text>", re.S)


def input_of(prompt: str) -> str:
    """The input text inside a self-explanation prompt."""
    found = _INPUT.search(prompt)
    if found is None:
        raise ValueError("no <text> block in the prompt")
    return found.group(1)


def predicted_label(model: TextModel, text: str) -> str:
    probs = model.predict(text if text.strip() else " ")[0]
    return model.class_names[int(np.argmax(probs))]


def answer_json(label: str, evidence: list[str], confidence: float = 0.9) -> str:
    return "Sure.\n```json\n" + json.dumps(
        {"label": label, "evidence": evidence, "confidence": confidence}) + "\n```"


def keyword_explainer(model: TextModel) -> Callable[[str], str]:
    """States the classifier's label and the keyword (when present) as evidence."""

    def answer(prompt: str) -> str:
        text = input_of(prompt)
        words = text.split()
        evidence = [KEYWORD] if KEYWORD in words else words[:1] or ["none"]
        return answer_json(predicted_label(model, text), evidence)

    return answer


def random_explainer(model: TextModel, seed: int, most: int = 2) -> Callable[[str], str]:
    """States the classifier's label and 1..``most`` random words other than the keyword."""
    rng = np.random.default_rng(seed)

    def answer(prompt: str) -> str:
        text = input_of(prompt)
        words = sorted({w for w in text.split() if w != KEYWORD})
        size = int(rng.integers(1, most + 1))
        chosen = list(rng.choice(words, size=min(size, len(words)), replace=False)) \
            if words else ["none"]
        return answer_json(predicted_label(model, text), [str(w) for w in chosen])

    return answer


def fixed_answer(raw: str) -> Callable[[str], str]:
    return lambda prompt: raw


# A ChatML template like SmolLM2's (one user turn, then the assistant's turn opened).
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def bpe_tokenizer(corpus: list[str], vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained in memory, with a ChatML chat template: offsets
    include the leading space, as in GPT-2 and SmolLM2."""
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=vocab_size, min_frequency=1, show_progress=False,
                            special_tokens=["<|pad|>", "<|im_start|>", "<|im_end|>"])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, pad_token="<|pad|>",
                                  bos_token="<|im_start|>", eos_token="<|im_end|>")
    tok.chat_template = CHATML
    return tok


def bpe_llama(corpus: list[str], *, seed: int = 0) -> TextModel:
    """A tiny random Llama over :func:`bpe_tokenizer` (random answers, real plumbing)."""
    tok = bpe_tokenizer(corpus)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                             max_position_embeddings=512, attn_implementation="eager",
                             pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                             eos_token_id=tok.eos_token_id, tie_word_embeddings=False)
        module = LlamaForCausalLM(config).eval()
    return TextModel(module, tok, "causal_lm", model_id="tiny-bpe-llama", max_length=512)
