"""Tiny models for the patching tests, built and trained inside the tests.

- :func:`copy_lm`: a 2-layer Llama trained to copy the word at a fixed key position to the
  last position (a planted information path: the key position's residual stream until an
  attention head moves the word to the last position).
- :func:`random_bert`, :func:`random_gpt2`: untrained models with a wide initialisation, so
  that swapping one word moves the output by a logit or more.
- :class:`KeywordLM`: a minimal causal LM whose blocks take their hidden states as the
  ``hidden_states`` *keyword* (the patching hooks must handle both calling styles).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertTokenizerFast,
    GPT2Config,
    GPT2LMHeadModel,
)

from tiny import FILLER, llama_lm, tokenizer
from xai_sandbox.text.model import TextModel

LENGTH = 7
KEY_POSITION = 1


def copy_lm(folder: Path, *, layers: int = 2, steps: int = 80, seed: int = 0
            ) -> TextModel:
    """A Llama trained (Adam on fresh random batches) to copy the key word to the end.

    Every sequence is ``LENGTH`` random filler words; the loss is the next-token loss at the
    last position with the word at ``KEY_POSITION`` as the answer. 80 steps reach 100%
    accuracy (about 3 s on one idle core).
    """
    tok = tokenizer(folder)
    model = llama_lm(tok, layers=layers, seed=seed)
    words = torch.as_tensor(tok.convert_tokens_to_ids(FILLER))
    gen = torch.Generator().manual_seed(seed)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        ids = words[torch.randint(len(words), (64, LENGTH), generator=gen)]
        logits = model(input_ids=ids).logits[:, -1]
        loss = torch.nn.functional.cross_entropy(logits, ids[:, KEY_POSITION])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return TextModel(model.eval(), tok, "causal_lm", model_id="tiny-copy", version="1")


def random_bert(tok: BertTokenizerFast, *, seed: int = 0) -> TextModel:
    """A 2-layer BERT classifier with random weights (std 0.3)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        config = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64,
                            num_hidden_layers=2, num_attention_heads=4,
                            max_position_embeddings=64, num_labels=2,
                            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                            initializer_range=0.3, attn_implementation="eager")
        model = BertForSequenceClassification(config).eval()
    return TextModel(model, tok, "classifier", class_names=("no", "yes"),
                     model_id="random-bert")


def random_gpt2(tok: BertTokenizerFast, *, seed: int = 0) -> TextModel:
    """A 2-layer GPT-2 with random weights (std 0.3)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        config = GPT2Config(vocab_size=tok.vocab_size, n_embd=32, n_layer=2, n_head=4,
                            n_positions=64, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                            initializer_range=0.3, attn_implementation="eager",
                            pad_token_id=tok.pad_token_id, bos_token_id=tok.cls_token_id,
                            eos_token_id=tok.sep_token_id)
        model = GPT2LMHeadModel(config).eval()
    return TextModel(model, tok, "causal_lm", model_id="random-gpt2")


class _Attention(torch.nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.v_proj = torch.nn.Linear(width, width)
        self.o_proj = torch.nn.Linear(width, width)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        # Uniform causal attention: every position averages the values up to itself.
        values = self.v_proj(hidden_states).cumsum(dim=1)
        counts = torch.arange(1, hidden_states.shape[1] + 1, device=values.device)
        mixed: torch.Tensor = values / counts[None, :, None]
        out: torch.Tensor = self.o_proj(mixed)
        return out


class _Block(torch.nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.self_attn = _Attention(width)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(width, 2 * width), torch.nn.Tanh(),
                                       torch.nn.Linear(2 * width, width))

    def forward(self, *, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = hidden_states + self.self_attn(hidden_states=hidden_states)
        out: torch.Tensor = hidden_states + self.mlp(hidden_states)
        return out


class KeywordLM(torch.nn.Module):
    """A causal LM laid out like Llama (``layers[l].self_attn.o_proj``, ``.mlp``) whose
    blocks are called as ``layer(hidden_states=h)``."""

    def __init__(self, vocab: int, *, width: int = 16, layers: int = 2, seed: int = 0
                 ) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.config = SimpleNamespace(num_attention_heads=2, hidden_size=width,
                                          vocab_size=vocab)
            self.embed = torch.nn.Embedding(vocab, width)
            self.layers = torch.nn.ModuleList(_Block(width) for _ in range(layers))
            self.lm_head = torch.nn.Linear(width, vocab)

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.embed

    def forward(self, input_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None,
                inputs_embeds: torch.Tensor | None = None, **kwargs: Any) -> SimpleNamespace:
        hidden = self.embed(input_ids) if inputs_embeds is None else inputs_embeds
        for layer in self.layers:
            hidden = layer(hidden_states=hidden)
        return SimpleNamespace(logits=self.lm_head(hidden))


def keyword_lm(tok: BertTokenizerFast, *, seed: int = 0) -> TextModel:
    return TextModel(KeywordLM(tok.vocab_size, seed=seed).eval(), tok, "causal_lm",
                     model_id="keyword-lm")
