"""The checks of the trigger search's arguments, its target, and the trigger vocabulary
(whole-word tokens that round-trip through the tokenizer)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from xai_sandbox.errors import InvalidInputError, InvalidTargetError, UnsupportedModelError
from xai_sandbox.text import checks
from xai_sandbox.text.model import TextModel

__all__ = ["trigger_vocabulary"]


METHOD = "universal_trigger"
MAX_ROWS = 1024           # rows of one forward pass when scoring candidates
MAX_TOKENS = 1 << 15      # classifiers: rows * positions of one forward pass
MAX_LOGITS = 1 << 25      # causal LMs: rows * positions * vocabulary of one forward pass
MIN_RANDOM = 20           # random triggers per evaluation (the protocol's floor)
_WORD_MARKERS = ("\u0120", "\u2581")   # byte-level BPE "Ġ" and SentencePiece "▁"


# ---------------------------------------------------------------------------- validation
def checked_seed(value: Any) -> int | None:
    if value is None:
        return None
    return checks.integer("random_state", value, 0)


def checked_model(model: Any) -> TextModel:
    if not isinstance(model, TextModel):
        raise UnsupportedModelError("model", "must be a TextModel", type(model).__name__)
    return model


def embedding_matrix(model: TextModel) -> torch.Tensor:
    weight = getattr(model.embeddings(), "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
        raise UnsupportedModelError("model", "its input embedding layer must hold a 2-D "
                                    "weight (one row per token)", type(model.module).__name__)
    return weight


def n_tokens(model: TextModel) -> int:
    return min(len(model.tokenizer), int(embedding_matrix(model).shape[0]))


@dataclass(frozen=True)
class Target:
    """What the loss is about: a class index, or the ids of a continuation."""

    index: int | None                # classifier: the target class
    tokens: tuple[int, ...]          # causal LM: the target continuation's ids
    name: str


def resolve_target(model: TextModel, target: Any) -> Target:
    if model.kind == "classifier":
        names = model.class_names
        if isinstance(target, str) and target in names:
            return Target(names.index(target), (), target)
        if (isinstance(target, int | np.integer) and not isinstance(target, bool)
                and 0 <= int(target) < len(names)):
            return Target(int(target), (), names[int(target)])
        raise InvalidTargetError("target", f"must be a class index in [0, {len(names)}) or "
                                 f"one of {list(names)}", target)
    if not isinstance(target, str) or not target:
        raise InvalidTargetError("target", "for a causal LM must be the target continuation "
                                 "(a non-empty string)", target)
    tokens = model.tokenizer(target, add_special_tokens=False)["input_ids"]
    if not tokens:
        raise InvalidTargetError("target", "must tokenise to at least one token", target)
    return Target(None, tuple(int(t) for t in tokens), target)


def checked_vocabulary(model: TextModel, vocabulary: Any) -> np.ndarray:
    if vocabulary is None:
        vocab = trigger_vocabulary(model)
    else:
        vocab = np.asarray(vocabulary)
        if vocab.ndim != 1 or vocab.dtype.kind not in "iu":
            raise InvalidInputError("vocabulary", "must be a 1-D array of token ids",
                                    vocabulary)
        vocab = np.unique(vocab.astype(np.int64))
        n = n_tokens(model)
        if vocab.size and (vocab[0] < 0 or vocab[-1] >= n):
            raise InvalidInputError("vocabulary", f"token ids must lie in [0, {n})",
                                    [int(vocab[0]), int(vocab[-1])])
        special = sorted(set(vocab.tolist()) & model.special_ids)
        if special:
            raise InvalidInputError("vocabulary", "must not hold special tokens", special)
    if not vocab.size:
        raise InvalidInputError("vocabulary", "must allow at least one token (the filter "
                                "left none)", [])
    return vocab


# ---------------------------------------------------------------------------- vocabulary
def _word_marker(pieces: Sequence[str]) -> str | None:
    """The word-start marker of a BPE or SentencePiece vocabulary, if it uses one."""
    for marker in _WORD_MARKERS:
        if sum(p.startswith(marker) for p in pieces) >= 0.2 * max(len(pieces), 1):
            return marker
    return None


def _is_continuation(piece: str, text: str, marker: str | None) -> bool:
    """A subword that continues a word: WordPiece ``##x``, or (in a vocabulary with a
    word-start marker) an alphanumeric piece without the marker."""
    if piece.startswith("##") and len(piece) > 2:
        return True
    return marker is not None and not piece.startswith(marker) and text[:1].isalnum()


def round_trips(tokenizer: Any, sequences: Sequence[Sequence[int]]) -> list[bool]:
    """Whether each id sequence encodes back to itself from its decoded text."""
    if not sequences:
        return []
    texts = tokenizer.batch_decode([list(s) for s in sequences], skip_special_tokens=False,
                                   clean_up_tokenization_spaces=False)
    back = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [list(b) == list(s) for b, s in zip(back, sequences, strict=True)]


def trigger_vocabulary(model: TextModel, *, exclude_words: Sequence[str] = (),
                       allow_subwords: bool = False) -> np.ndarray:
    """Token ids a trigger may use.

    Parameters
    ----------
    model:
        The model whose tokenizer and embedding table define the tokens.
    exclude_words:
        Label-indicative words to leave out (Wallace et al. blacklisted sentiment words so
        a trigger is not trivially "terrible"). A classifier's class names are always left
        out too. Matching is on the token's decoded text, stripped and lower-cased, against
        each whitespace-separated word.
    allow_subwords:
        Keep subword continuations (WordPiece ``##x``, or BPE/SentencePiece pieces without
        the word-start marker). A continuation must then round-trip after a word token
        (``"the"`` where it is one token) rather than on its own.

    Returns
    -------
    numpy.ndarray
        Sorted ``int64`` ids: no special tokens, no tokens whose decoded text encodes to
        anything else, no blank tokens, no blacklisted words.
    """
    model = checked_model(model)
    if isinstance(exclude_words, str) or not isinstance(exclude_words, Sequence):
        raise InvalidInputError("exclude_words", "must be a list of words", exclude_words)
    if not all(isinstance(w, str) for w in exclude_words):
        raise InvalidInputError("exclude_words", "must hold strings only",
                                [w for w in exclude_words if not isinstance(w, str)][:3])
    if not isinstance(allow_subwords, bool):
        raise InvalidInputError("allow_subwords", "must be True or False", allow_subwords)
    phrases = [*exclude_words, *(model.class_names if model.kind == "classifier" else ())]
    blacklist = {word.lower() for phrase in phrases for word in phrase.split()}

    tok = model.tokenizer
    ids = [i for i in range(n_tokens(model)) if i not in model.special_ids]
    pieces = [str(p) for p in tok.convert_ids_to_tokens(ids)]
    texts = tok.batch_decode([[i] for i in ids], skip_special_tokens=False,
                             clean_up_tokenization_spaces=False)
    marker = _word_marker(pieces)
    whole: list[int] = []
    parts: list[int] = []
    for i, piece, text in zip(ids, pieces, texts, strict=True):
        word = text.strip().lower()
        if not word or word in blacklist or word.removeprefix("##") in blacklist:
            continue
        if _is_continuation(piece, text, marker):
            if allow_subwords:
                parts.append(i)
        else:
            whole.append(i)
    allowed = [i for i, ok in zip(whole, round_trips(tok, [[i] for i in whole]), strict=True)
               if ok]
    if parts and allowed:
        probe = tok("the", add_special_tokens=False)["input_ids"]
        lead = int(probe[0]) if len(probe) == 1 and probe[0] in allowed else allowed[0]
        pairs = round_trips(tok, [[lead, i] for i in parts])
        allowed += [i for i, ok in zip(parts, pairs, strict=True) if ok]
    return np.array(sorted(allowed), dtype=np.int64)
