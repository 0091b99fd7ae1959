"""Transformer text models as the text explainers see them.

:class:`TextModel` holds a Hugging Face model (an encoder classifier or a causal LM, loaded
with eager attention so that attention weights come back) and its tokenizer. It gives
every text method the same few things: tokenisation with character offsets, the word
embedding layer, a forward from ids or from embeddings to the explained outputs, attention
and hidden states, and the *sites* of each block (residual stream, attention output, MLP
output, the per-head input of the attention's output projection) for probing and patching.
Architectures are recognised by their module layout: BERT-style encoders (MiniLM), Llama
(SmolLM2) and GPT-2.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from xai_sandbox.errors import InvalidInputError, UnsupportedModelError
from xai_sandbox.explainers.explanation import Explanation, TextDetail, library_versions

__all__ = ["Blocks", "Encoded", "TextModel", "text_explanation"]

TextKind = Literal["classifier", "causal_lm"]


@dataclass(frozen=True)
class Blocks:
    """The transformer blocks of a model and the modules that mark their sites.

    ``attn_out[l]`` and ``mlp_out[l]`` are modules whose *output* is what the attention and
    the MLP of block ``l`` add to the residual stream (before any residual LayerNorm);
    ``head_in[l]`` is the module whose *input* is the concatenation of the heads' outputs
    (the attention's output projection), of width ``n_heads * head_dim``.
    """

    layers: tuple[torch.nn.Module, ...]
    attn_out: tuple[torch.nn.Module, ...]
    mlp_out: tuple[torch.nn.Module, ...]
    head_in: tuple[torch.nn.Module, ...]
    n_heads: int
    hidden_size: int

    @property
    def n_layers(self) -> int:
        return len(self.layers)


@dataclass(frozen=True)
class Encoded:
    """A tokenised batch: ids, mask, and each token's character span in its text."""

    input_ids: torch.Tensor          # (n, T) long
    attention_mask: torch.Tensor     # (n, T) long
    offsets: np.ndarray              # (n, T, 2); (0, 0) for special and pad tokens
    special: np.ndarray              # (n, T) bool: special tokens (CLS, SEP, BOS, PAD)
    texts: tuple[str, ...]

    def tokens(self, model: TextModel, row: int = 0) -> list[str]:
        ids = self.input_ids[row][self.attention_mask[row].bool()].tolist()
        return [str(t) for t in model.tokenizer.convert_ids_to_tokens(ids)]


def _sub(module: torch.nn.Module, path: str) -> torch.nn.Module:
    found: torch.nn.Module = module.get_submodule(path)
    return found


# Per family: where the block list is (under one of the prefixes), and inside a block the
# module whose output is the attention's contribution, the MLP's contribution, and the
# module whose input is the concatenated heads; then how to read the head count.
_LAYOUTS = (
    ("encoder.layer", "attention.output.dense", "output.dense", "attention.output.dense"),
    ("model.layers", "self_attn.o_proj", "mlp", "self_attn.o_proj"),
    ("layers", "self_attn.o_proj", "mlp", "self_attn.o_proj"),
    ("transformer.h", "attn.c_proj", "mlp", "attn.c_proj"),
)


def _find_blocks(module: torch.nn.Module) -> Blocks:
    """Recognise the block layout of a BERT-style encoder, Llama or GPT-2."""
    config = getattr(module, "config", None)
    named = dict(module.named_modules())
    for prefix in ("", "bert.", "model.", "encoder.", "base_model."):
        for where, attn, mlp, heads_in in _LAYOUTS:
            layers = named.get(prefix + where)
            if not isinstance(layers, torch.nn.ModuleList) or not len(layers):
                continue
            blocks = tuple(layers)
            first_proj = _sub(blocks[0], heads_in)
            heads = int(getattr(config, "num_attention_heads", 0)
                        or getattr(config, "n_head", 0) or 0)
            width = int(getattr(first_proj, "out_features", 0)
                        or getattr(config, "hidden_size", 0) or getattr(config, "n_embd", 0))
            if not heads:
                raise UnsupportedModelError("model", "its config must give the number of "
                                            "attention heads", type(module).__name__)
            return Blocks(blocks, tuple(_sub(b, attn) for b in blocks),
                          tuple(_sub(b, mlp) for b in blocks),
                          tuple(_sub(b, heads_in) for b in blocks), heads, width)
    raise UnsupportedModelError("model", "must be a BERT-style encoder, a Llama or a GPT-2 "
                                "transformer (no known block layout found)",
                                type(module).__name__)


@dataclass
class TextModel:
    """A transformer text model and its tokenizer.

    ``module(input_ids=..., attention_mask=..., inputs_embeds=...)`` must return an object
    with ``logits`` (Hugging Face style): ``(n, n_classes)`` for a classifier,
    ``(n, T, vocab)`` for a causal LM. ``class_names`` names a classifier's outputs.
    """

    module: torch.nn.Module
    tokenizer: Any
    kind: TextKind
    class_names: tuple[str, ...] = ()
    model_id: str = "text-model"
    version: str = "1"
    max_length: int = 256
    _blocks: Blocks | None = field(default=None, init=False, repr=False)
    _fingerprint: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in ("classifier", "causal_lm"):
            raise InvalidInputError("kind", "must be 'classifier' or 'causal_lm'", self.kind)
        if self.kind == "classifier" and len(self.class_names) < 2:
            raise InvalidInputError("class_names", "a classifier needs at least two class "
                                    "names", list(self.class_names))
        if self.module.training:
            raise InvalidInputError("module", "must be in eval mode (call .eval())",
                                    "training mode")
        if self.tokenizer.pad_token_id is None:
            raise InvalidInputError("tokenizer", "needs a pad token (set tokenizer.pad_token)",
                                    None)

    # ------------------------------------------------------------------ structure
    @property
    def blocks(self) -> Blocks:
        if self._blocks is None:
            self._blocks = _find_blocks(self.module)
        return self._blocks

    def embeddings(self) -> torch.nn.Module:
        """The word-embedding layer (what token attributions are taken at)."""
        layer = self.module.get_input_embeddings()  # type: ignore[operator]
        if not isinstance(layer, torch.nn.Module):
            raise UnsupportedModelError("model", "has no input embedding layer",
                                        type(self.module).__name__)
        return layer

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    @property
    def special_ids(self) -> frozenset[int]:
        return frozenset(int(i) for i in self.tokenizer.all_special_ids)

    # ------------------------------------------------------------------ tokens
    def encode(self, texts: str | Sequence[str], *, add_special_tokens: bool = True
               ) -> Encoded:
        """Tokenise texts (padded on the right) with character offsets."""
        batch = [texts] if isinstance(texts, str) else list(texts) if isinstance(
            texts, Sequence) else []
        if not batch or not all(isinstance(t, str) and t for t in batch):
            shown = texts if isinstance(texts, str) or not batch else batch[:3]
            raise InvalidInputError("texts", "must be a non-empty text or list of non-empty "
                                    "texts", shown)
        enc = self.tokenizer(batch, padding=True, truncation=True, max_length=self.max_length,
                             return_offsets_mapping=True, return_tensors="pt",
                             add_special_tokens=add_special_tokens)
        ids = enc["input_ids"].to(self.device)
        mask = enc["attention_mask"].to(self.device)
        special = np.isin(ids.cpu().numpy(), list(self.special_ids)) | (
            mask.cpu().numpy() == 0)
        return Encoded(ids, mask, enc["offset_mapping"].cpu().numpy(), special, tuple(batch))

    def baseline_ids(self, encoded: Encoded) -> torch.Tensor:
        """Special tokens kept, every other token replaced by PAD (the usual IG baseline
        for text: ferret's and Captum's BERT tutorial's)."""
        keep = torch.as_tensor(encoded.special, device=encoded.input_ids.device)
        return torch.where(keep, encoded.input_ids, torch.full_like(encoded.input_ids,
                                                                    self.pad_id))

    # ------------------------------------------------------------------ forward
    def forward(self, input_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None,
                inputs_embeds: torch.Tensor | None = None, **kwargs: Any) -> Any:
        """The module's forward (an object with ``logits``, and ``attentions`` and
        ``hidden_states`` when asked for)."""
        return self.module(input_ids=input_ids, attention_mask=attention_mask,
                           inputs_embeds=inputs_embeds, **kwargs)

    def decode_step(self, input_ids: torch.Tensor, cache: Any = None
                    ) -> tuple[torch.Tensor, Any]:
        """One step of a causal LM's decoding with its key/value cache: the logits of the
        given positions and the cache to pass to the next step (``None`` on the first).

        transformers 5.24 renamed the forward's ``past_key_values`` to ``cache`` (the old
        name is deprecated); the name is read off the module's signature, so both work."""
        name = self._cache_argument()
        out = self.forward(input_ids, use_cache=True, **{name: cache})
        return out.logits, out[name]

    def _cache_argument(self) -> str:
        parameters = inspect.signature(self.module.forward).parameters
        return "cache" if "cache" in parameters else "past_key_values"

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
               ) -> torch.Tensor:
        out: torch.Tensor = self.forward(input_ids, attention_mask).logits
        return out

    def predict(self, texts: str | Sequence[str]) -> np.ndarray:
        """Class probabilities ``(n, n_classes)`` of a classifier."""
        if self.kind != "classifier":
            raise UnsupportedModelError("model", "predict() is for classifiers; use "
                                        "generation or next-token scores for a causal LM",
                                        self.kind)
        enc = self.encode(texts)
        with torch.no_grad():
            logits = self.logits(enc.input_ids, enc.attention_mask)
        return torch.softmax(logits.double(), dim=-1).cpu().numpy()

    def fingerprint(self) -> str:
        """SHA-256 of the weights, computed once (the model is never changed in place)."""
        if self._fingerprint is None:
            from xai_sandbox.models.fingerprint import fingerprint_module

            self._fingerprint = fingerprint_module(self.module)
        return self._fingerprint


def text_explanation(model: TextModel, method: str, values: Any, *, target: Any,
                     prediction: Any, output_space: str, parameters: dict[str, Any],
                     wall_time_s: float, tokens: Sequence[Sequence[str]] | None = None,
                     baseline: Any = None, expected_value: Any = None, delta: Any = None,
                     seed: int | None = None, text: TextDetail | None = None) -> Explanation:
    """Wrap a text method's result in the one result type, with provenance.

    ``values`` is ``(n, T)`` for token maps (or any ``(n, ...)`` map: layers x positions for
    patching, say); ``tokens``, one list per row, go into ``parameters["tokens"]`` because
    rows of a batch differ in length. ``prediction`` is ``(n, k)``; ``target`` one index
    per row. ``text`` carries a rich result (a probe report, patching maps, ...).
    """
    params = dict(parameters)
    if tokens is not None:
        params["tokens"] = [list(map(str, t)) for t in tokens]
    pred = np.atleast_2d(np.asarray(prediction, dtype=np.float64))
    return Explanation(
        method=method, values=np.asarray(values, dtype=np.float64),
        target=np.atleast_1d(np.asarray(target, dtype=np.int64)), prediction=pred,
        output_space=output_space, parameters=params,
        library_versions=library_versions("xai-sandbox", "torch", "captum", "transformers",
                                          "numpy", "scikit-learn"),
        wall_time_s=float(wall_time_s), baseline=baseline, expected_value=expected_value,
        delta=delta, seed=seed, text=text,
        model={"model_id": model.model_id, "version": model.version,
               "fingerprint": model.fingerprint()})
