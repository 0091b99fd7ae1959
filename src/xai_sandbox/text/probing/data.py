"""What the probes read: pooled hidden states, a randomly initialised copy of the model,
control-task labels and the split by document."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import torch

from xai_sandbox.errors import InvalidInputError, UnsupportedModelError
from xai_sandbox.text import checks
from xai_sandbox.text.model import TextModel
from xai_sandbox.text.probing.results import (
    POOLS,
    STOPWORDS,
    WORD,
    Pool,
    check_groups,
    check_labels,
)

__all__ = ["control_task_labels", "document_split", "hidden_states", "randomly_initialised"]


# ---------------------------------------------------------------------------- hidden states
def _is_encoder(model: TextModel) -> bool:
    """BERT-style encoders keep their blocks under ``encoder.layer``."""
    return any(name.endswith("encoder.layer") for name, _ in model.module.named_modules())


def resolve_pool(model: TextModel, pool: str) -> Pool:
    if pool not in POOLS:
        raise InvalidInputError("pool", f"must be one of {list(POOLS)}", pool)
    if pool != "auto":
        return cast(Pool, pool)
    return "cls" if _is_encoder(model) else "last"


def hidden_states(model: TextModel, texts: Sequence[str], *, pool: Pool = "auto",
                  batch_size: int = 32) -> np.ndarray:
    """One pooled vector per text at the embeddings and after every block.

    Parameters
    ----------
    model:
        The text model.
    texts:
        The texts.
    pool:
        ``"cls"``: the first real token (CLS of an encoder); ``"last"``: the last non-pad
        token (what a decoder has read everything at); ``"mean"``: the mean over non-pad
        tokens. ``"auto"`` (default) is ``"cls"`` for BERT-style encoders and ``"last"``
        otherwise.
    batch_size:
        Texts per forward pass.

    Returns
    -------
    np.ndarray
        ``(n_layers + 1, n, d)`` float32: layer 0 is the embedding output, layer ``l`` the
        output of block ``l`` as the model returns it (for Llama and GPT-2 the last entry
        is after the final norm).
    """
    batch = checks.texts("texts", texts)
    how = resolve_pool(model, pool)
    size = checks.integer("batch_size", batch_size, 1)
    pooled: list[np.ndarray] = []
    with torch.no_grad():
        for start in range(0, len(batch), size):
            enc = model.encode(batch[start:start + size])
            out = model.forward(enc.input_ids, enc.attention_mask, output_hidden_states=True)
            states = getattr(out, "hidden_states", None)
            if not states:
                raise UnsupportedModelError("model", "must return hidden_states when called "
                                            "with output_hidden_states=True",
                                            type(model.module).__name__)
            stack = torch.stack([h.float() for h in states])           # (L+1, b, T, d)
            mask = enc.attention_mask.to(stack.device).bool()          # (b, T)
            rows = torch.arange(mask.shape[0], device=stack.device)
            if how == "mean":
                weights = mask.float() / mask.sum(dim=1, keepdim=True).clamp(min=1)
                vectors = torch.einsum("lbtd,bt->lbd", stack, weights)
            elif how == "cls":
                first = mask.int().argmax(dim=1)
                vectors = stack[:, rows, first]
            else:
                last = mask.shape[1] - 1 - mask.int().flip(dims=[1]).argmax(dim=1)
                vectors = stack[:, rows, last]
            pooled.append(vectors.cpu().numpy().astype(np.float32))
    return np.concatenate(pooled, axis=1)


# ---------------------------------------------------------------------------- random init
def randomly_initialised(model: TextModel, random_state: int = 0) -> TextModel:
    """A copy of the model's architecture with fresh random weights.

    The module is rebuilt from ``model.module.config`` with the same class (on the meta
    device, so that building it draws nothing), so every shape, the attention
    implementation and the head are the same. Its weights then come from a private
    ``torch.Generator`` seeded by ``random_state``, as Hugging Face initialises these
    models: matrices (linear, embedding) from ``N(0, initializer_range^2)`` with an
    embedding's padding row zero, biases zero, norm scales one. Buffers (position ids,
    rotary frequencies) are the model's own. No global generator is seeded or read.
    """
    seed = checks.integer("random_state", random_state, 0)
    config = getattr(model.module, "config", None)
    if config is None:
        raise UnsupportedModelError("model", "needs a Hugging Face config to rebuild a "
                                    "randomly initialised copy from",
                                    type(model.module).__name__)
    first = next(model.module.parameters())
    try:
        with torch.device("meta"):
            fresh = type(model.module)(copy.deepcopy(config))
    except TypeError as exc:
        raise UnsupportedModelError("model", "its class must be constructible from its "
                                    f"config ({exc})", type(model.module).__name__) from exc
    fresh = fresh.to_empty(device=first.device).to(dtype=first.dtype)
    std = float(getattr(config, "initializer_range", 0.02) or 0.02)
    _initialise(fresh, std, torch.Generator(device=first.device).manual_seed(seed))
    buffers = dict(model.module.named_buffers())
    with torch.no_grad():
        for name, buffer in fresh.named_buffers():
            if name in buffers and buffers[name].shape == buffer.shape:
                buffer.copy_(buffers[name])
    return TextModel(fresh.eval(), model.tokenizer, model.kind, class_names=model.class_names,
                     model_id=f"{model.model_id}:random-init-{seed}", version=model.version,
                     max_length=model.max_length)


def _initialise(module: torch.nn.Module, std: float, generator: torch.Generator) -> None:
    """Every parameter from ``generator`` alone: matrices ``N(0, std^2)``, biases 0, the
    other vectors (norm scales) 1, and an embedding's padding row 0."""
    with torch.no_grad():
        for sub in module.modules():
            for name, param in sub.named_parameters(recurse=False):
                if param.ndim >= 2:
                    param.normal_(0.0, std, generator=generator)
                elif "bias" in name:
                    param.zero_()
                else:
                    param.fill_(1.0)
            if isinstance(sub, torch.nn.Embedding) and sub.padding_idx is not None:
                sub.weight[sub.padding_idx].zero_()


# ---------------------------------------------------------------------------- control task
def _first_content_word(text: str) -> str:
    words = [str(w).lower() for w in WORD.findall(text)]
    for word in words:
        if word not in STOPWORDS:
            return word
    return words[0] if words else text.strip().lower()


def control_task_labels(texts: Sequence[str], labels: Any, groups: Any = None, *,
                        random_state: int = 0) -> np.ndarray:
    """Hewitt & Liang control labels for text-level probes.

    Each document gets a label that is a fixed random function of the type of its first
    content word (the first word that is not a function word; the first row of a document
    when ``groups`` gives several rows per document), drawn from the empirical distribution
    of ``labels``. Two documents opening with the same content word share their control
    label, so a probe can only learn it by reading word identity.

    Returns
    -------
    np.ndarray
        One control label per row, with the dtype of ``labels``.
    """
    batch = checks.texts("texts", texts)
    y = check_labels(labels, len(batch))
    g = check_groups(groups, len(batch))
    seed = checks.integer("random_state", random_state, 0)
    classes, counts = np.unique(y, return_counts=True)
    cumulative = np.cumsum(counts) / counts.sum()
    doc_ids = np.arange(len(batch)) if g is None else g
    first_row: dict[Any, int] = {}
    for row, doc in enumerate(doc_ids.tolist()):
        first_row.setdefault(doc, row)
    out = np.empty(len(batch), dtype=y.dtype)
    for row, doc in enumerate(doc_ids.tolist()):
        word = _first_content_word(batch[first_row[doc]])
        digest = hashlib.sha256(f"{seed}\x00{word}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2.0**64
        index = min(int(np.searchsorted(cumulative, u, side="right")), classes.size - 1)
        out[row] = classes[index]
    return out


# ---------------------------------------------------------------------------- split
def document_split(n: int, labels: Any, groups: Any = None, *, test_size: float = 0.3,
                   random_state: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Train and test rows, with no document on both sides.

    With ``groups`` (one document id per row) the documents are shuffled into the two parts
    (scikit-learn's ``GroupShuffleSplit``); without, every row is its own document and the
    split is stratified by label.

    Returns
    -------
    tuple of np.ndarray
        Sorted train rows and sorted test rows.
    """
    from sklearn.model_selection import GroupShuffleSplit, StratifiedShuffleSplit

    y = check_labels(labels, n)
    g = check_groups(groups, n)
    share = checks.unit_interval("test_size", test_size)
    seed = checks.integer("random_state", random_state, 0)
    rows = np.zeros((n, 1))
    if g is None:
        _, counts = np.unique(y, return_counts=True)
        n_test = int(np.ceil(share * n))
        if counts.min() < 2 or n_test < counts.size or n - n_test < counts.size:
            raise InvalidInputError("labels", "a stratified split needs at least two rows of "
                                    "every class and room for each class on both sides",
                                    dict(zip(*np.unique(y, return_counts=True), strict=True)))
        splitter: Any = StratifiedShuffleSplit(n_splits=1, test_size=share, random_state=seed)
        train, test = next(splitter.split(rows, y))
    else:
        splitter = GroupShuffleSplit(n_splits=1, test_size=share, random_state=seed)
        train, test = next(splitter.split(rows, y, g))
    if np.unique(y[train]).size < 2:
        raise InvalidInputError("groups", "the document split left a single class in the "
                                "training part; use more documents or another random_state",
                                f"{np.unique(g[train]).size if g is not None else train.size}"
                                " training documents")
    return np.sort(train), np.sort(test)
