"""Tiny transformer text models built and trained inside the tests (no hub, no network).

A word-level vocabulary file is written by the test and read by a BERT tokenizer; models
come from a ``*Config`` with 2-4 layers and d = 32-64, with eager attention.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertTokenizerFast,
    LlamaConfig,
    LlamaForCausalLM,
)

from xai_sandbox.text.model import TextModel

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
FILLER = ["the", "a", "service", "bank", "loan", "was", "is", "very", "quite", "slow", "fast",
          "staff", "branch", "card", "account", "today", "again", "my", "our", "with", "and",
          "late", "payment", "form", "office", "phone", "call", "rate", "fee", "letter"]
KEYWORD = "zorp"            # the planted keyword: its presence alone decides the label


def tokenizer(folder: Path, words: Sequence[str] = (*FILLER, KEYWORD)) -> BertTokenizerFast:
    """A word-level BERT tokenizer over ``words`` (written to ``folder/vocab.txt``)."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join([*SPECIAL, *words]) + "\n", encoding="utf-8")
    return BertTokenizerFast.from_pretrained(str(folder), do_lower_case=True)


def keyword_data(n: int, seed: int, length: tuple[int, int] = (5, 10),
                 vocabulary: Sequence[str] = FILLER) -> tuple[list[str], np.ndarray]:
    """Sentences of ``vocabulary`` words; odd rows carry the keyword at a random position
    (label 1)."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(n):
        words = [str(w) for w in rng.choice(list(vocabulary), size=int(rng.integers(*length)))]
        label = i % 2
        if label:
            words.insert(int(rng.integers(0, len(words) + 1)), KEYWORD)
        texts.append(" ".join(words))
        labels.append(label)
    return texts, np.array(labels)


def bert_classifier(tok: BertTokenizerFast, *, layers: int = 2, hidden: int = 32,
                    heads: int = 4, seed: int = 0, labels: int = 2
                    ) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=hidden,
                        intermediate_size=2 * hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, max_position_embeddings=64,
                        num_labels=labels, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, attn_implementation="eager")
    return BertForSequenceClassification(config)


def train_classifier(model: torch.nn.Module, tok: BertTokenizerFast, texts: list[str],
                     labels: np.ndarray, *, epochs: int = 30, lr: float = 3e-3,
                     seed: int = 0) -> torch.nn.Module:
    """Full-batch Adam; returns the model in eval mode."""
    enc = tok(texts, padding=True, return_tensors="pt")
    y = torch.as_tensor(labels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        for _ in range(epochs):
            opt.zero_grad()
            out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
            loss = torch.nn.functional.cross_entropy(out.logits, y)
            loss.backward()
            opt.step()
    return model.eval()


def keyword_classifier(folder: Path, *, seed: int = 0) -> TextModel:
    """A 2-layer BERT trained until the keyword decides the label (held-out accuracy ~1)."""
    return presence_classifier(tokenizer(folder), *keyword_data(400, seed), "tiny-keyword",
                               seed=seed)


def presence_classifier(tok: BertTokenizerFast, texts: list[str], labels: np.ndarray,
                        model_id: str, *, seed: int = 0) -> TextModel:
    """A 2-layer BERT trained on ``texts`` labelled absent (0) or present (1)."""
    model = train_classifier(bert_classifier(tok, seed=seed), tok, texts, labels, seed=seed)
    return TextModel(model, tok, "classifier", class_names=("absent", "present"),
                     model_id=model_id, version="1")


def llama_lm(tok: BertTokenizerFast, *, layers: int = 2, hidden: int = 32, heads: int = 4,
             seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=tok.vocab_size, hidden_size=hidden,
                         intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=64, attn_implementation="eager",
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.cls_token_id,
                         eos_token_id=tok.sep_token_id, tie_word_embeddings=False)
    return LlamaForCausalLM(config).eval()
