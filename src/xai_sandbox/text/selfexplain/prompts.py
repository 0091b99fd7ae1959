"""The self-explanation prompt and the answerers: greedy decoding, and decoding constrained
to the schema, the labels and the input's own phrases."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from xai_sandbox.errors import InvalidInputError, UnsupportedModelError
from xai_sandbox.text import checks
from xai_sandbox.text.model import TextModel
from xai_sandbox.text.selfexplain.parsing import (
    ANSWER_PREFILL,
    Answerer,
    checked_labels,
    checked_text,
    first_json_object,
)

__all__ = ["SelfExplanationPrompt", "build_prompt", "constrained_answerer", "greedy_answerer"]


# ---------------------------------------------------------------------------- prompts
@dataclass(frozen=True)
class SelfExplanationPrompt:
    """The prompt, and where the input text sits in it (character ``start``)."""

    prompt: str
    text: str
    start: int
    labels: tuple[str, ...]


_INSTRUCTION = (
    "Classify the text between <text> and </text> as one of: {labels}.\n"
    "Answer with one JSON object only, label first: "
    '{{"label": "...", "evidence": ["..."], "confidence": 0.0}}\n'
    '"evidence" lists up to three short phrases of the text that decided the label, '
    'each copied exactly; "confidence" is a number from 0 to 1.\n\n'
    "<text>\n{text}\n</text>")


def build_prompt(model: TextModel | None, text: str, labels: Sequence[str]
                 ) -> SelfExplanationPrompt:
    """The answer-first JSON prompt, through the tokenizer's chat template when it has one
    (a single user turn, then the assistant's turn opened)."""
    checked_text("text", text, empty=True)
    names = checked_labels(labels)
    user = _INSTRUCTION.format(labels=", ".join(f'"{x}"' for x in names), text=text)
    template = getattr(getattr(model, "tokenizer", None), "chat_template", None)
    if model is not None and template:
        prompt = str(model.tokenizer.apply_chat_template(
            [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True))
    else:
        prompt = user + "\n"
    block = f"<text>\n{text}\n</text>"
    where = prompt.rfind(block)
    if where < 0:
        raise UnsupportedModelError("model", "its chat template must keep the user's text "
                                    "verbatim", type(model.tokenizer).__name__
                                    if model is not None else None)
    return SelfExplanationPrompt(prompt, text, where + len("<text>\n"), names)


def greedy_answerer(model: TextModel, *, max_new_tokens: int = 96,
                    prefill: str = ANSWER_PREFILL) -> Answerer:
    """A causal LM's greedy answer to a prompt: ``prefill`` is appended to the prompt (it
    forces the label first) and returned in front of the continuation. Generation stops
    at the end-of-sequence token, once a whole JSON object has been written, or after
    ``max_new_tokens``."""
    if model.kind != "causal_lm":
        raise UnsupportedModelError("model", "greedy answers need a causal LM; pass "
                                    "answer= for a classifier", model.kind)
    limit = checks.integer("max_new_tokens", max_new_tokens, 1)
    if not isinstance(prefill, str):
        raise InvalidInputError("prefill", "must be a string", prefill)

    def answer(prompt: str) -> str:
        ids = model.encode(prompt + prefill).input_ids
        eos = model.tokenizer.eos_token_id
        out: list[int] = []
        past: Any = None
        step = ids
        with torch.no_grad():
            for _ in range(limit):
                logits, past = model.decode_step(step, past)
                nxt = int(logits[0, -1].argmax())
                if eos is not None and nxt == eos:
                    break
                out.append(nxt)
                step = torch.as_tensor([[nxt]], device=ids.device)
                text = prefill + model.tokenizer.decode(out, skip_special_tokens=True)
                if "}" in text and first_json_object(text)[0] is not None:
                    break
        return prefill + str(model.tokenizer.decode(out, skip_special_tokens=True))

    return answer


def _prompt_text(prompt: str) -> str:
    """The input text of a prompt :func:`build_prompt` wrote (its last ``<text>`` block)."""
    begin = prompt.rfind("<text>\n")
    end = prompt.find("\n</text>", begin + len("<text>\n")) if begin >= 0 else -1
    if begin < 0 or end < 0:
        raise InvalidInputError("prompt", "must hold the <text> block build_prompt writes",
                                prompt[-120:])
    return prompt[begin + len("<text>\n"):end]


class _Vocabulary:
    """Each token's text, and the token groups the constrained decoder chooses among."""

    def __init__(self, model: TextModel) -> None:
        tok = model.tokenizer
        size = len(tok)
        special = set(model.special_ids)
        texts = tok.batch_decode([[i] for i in range(size)], skip_special_tokens=False,
                                 clean_up_tokenization_spaces=False)
        self.texts = ["" if i in special else str(t) for i, t in enumerate(texts)]
        # Quotable: no quote, backslash or control character (the JSON string then holds
        # the characters as they are) and no undecodable byte piece.
        self.quotable = [(i, t) for i, t in enumerate(self.texts)
                         if t and "\ufffd" not in t and '"' not in t and "\\" not in t
                         and all(ord(c) >= 0x20 for c in t)]
        self.closing = self._starting('"')
        self.comma = self._starting(",")
        self.bracket = self._starting("]")
        self.brace = self._starting("}")
        self.digits = {t: i for i, t in enumerate(self.texts) if t in "0123456789" and t}

    def _starting(self, char: str) -> list[int]:
        return [i for i, t in enumerate(self.texts) if t.startswith(char)]


class _Decoder:
    """Greedy decoding of a causal LM through its key/value cache: ``force`` feeds text
    the format fixes, ``choose`` takes the most probable of the allowed tokens."""

    def __init__(self, model: TextModel, prompt: str) -> None:
        self.model = model
        self.cache: Any = None
        self.last = self._feed(model.encode(prompt).input_ids)

    def _feed(self, ids: torch.Tensor) -> torch.Tensor:
        logits, self.cache = self.model.decode_step(ids, self.cache)
        out: torch.Tensor = logits[0, -1].float()
        return out

    def feed(self, ids: Sequence[int]) -> None:
        if ids:
            self.last = self._feed(torch.as_tensor([list(ids)], device=self.model.device))

    def force(self, text: str) -> str:
        self.feed(self.model.tokenizer(text, add_special_tokens=False)["input_ids"])
        return text

    def best(self, ids: Sequence[int]) -> tuple[int, float]:
        """The allowed token of highest logit, and that logit (-inf when none)."""
        if not ids:
            return -1, -math.inf
        index = torch.as_tensor(list(ids), device=self.last.device)
        scores = self.last.detach()[index]
        top = int(scores.argmax())
        return int(ids[top]), float(scores[top])


def constrained_answerer(model: TextModel, labels: Sequence[str], *, max_phrases: int = 3,
                         max_phrase_tokens: int = 8) -> Answerer:
    """A causal LM's greedy answer, constrained to the self-explanation schema.

    At each step only tokens that keep the answer a valid prefix of
    ``{"label": L, "evidence": [Q, ...], "confidence": C}`` are allowed: ``L`` one of
    ``labels`` (greedy over the labels' tokens, :data:`ANSWER_PREFILL` first), each quote
    ``Q`` a non-empty substring of the input text (``max_phrase_tokens`` tokens at most;
    the quote ends where the model's best closing-quote token beats its best allowed
    continuation), 1 to ``max_phrases`` quotes (another one when the model's best comma
    token beats its best bracket token), and ``C`` a number in [0, 1] of at most two
    decimals. The punctuation between the fields is fed, not sampled. The answer
    therefore always parses and never quotes what the text does not hold; what is left to
    the model is the label, which words it quotes and its confidence. The text is read
    from the prompt's ``<text>`` block (:func:`build_prompt`); an empty text gets an
    empty evidence list (only its label is read, as on redaction).
    """
    if model.kind != "causal_lm":
        raise UnsupportedModelError("model", "constrained answers need a causal LM; pass "
                                    "answer= for a classifier", model.kind)
    names = checked_labels(labels)
    phrases = checks.integer("max_phrases", max_phrases, 1)
    length = checks.integer("max_phrase_tokens", max_phrase_tokens, 1)
    label_ids = label_token_ids(model, names)
    vocab = _Vocabulary(model)

    def label(decoder: _Decoder) -> str:
        chosen: list[int] = []
        while True:
            options = {ids[len(chosen)] for ids in label_ids
                       if ids[:len(chosen)] == chosen and len(ids) > len(chosen)}
            token, _ = decoder.best(sorted(options))
            chosen.append(token)
            decoder.feed([token])
            for name, ids in zip(names, label_ids, strict=True):
                if ids == chosen:
                    return name

    def quote(decoder: _Decoder, text: str, pieces: list[tuple[int, str]],
              starts: set[int]) -> str:
        """One quote: a run of whole words of ``text`` from one of ``starts`` (word
        starts no earlier quote began at); the starts it may still have are narrowed as
        it grows."""
        phrase, where = "", set(starts)
        for _ in range(length):
            allowed = [(i, t) for i, t in pieces if (phrase or not t[0].isspace())
                       and any(text.startswith(phrase + t, p) for p in where)]
            token, score = decoder.best([i for i, _ in allowed])
            ends = phrase.strip() and any(_word_end(text, p + len(phrase)) for p in where)
            if ends and (token < 0 or decoder.best(vocab.closing)[1] >= score):
                break
            if token < 0:
                break
            phrase += vocab.texts[token]
            where = {p for p in where if text.startswith(phrase, p)}
            decoder.feed([token])
        if not phrase.strip():        # nothing quotable (no token spells a piece of it)
            phrase = decoder.force(json.dumps(text.split()[0])[1:-1])
        while phrase and not any(_word_end(text, p + len(phrase)) for p in where):
            phrase = phrase[:-1]      # the length limit stopped it inside a word
        starts -= {p for p in where if text.startswith(phrase, p)}
        return phrase.strip() or phrase

    def number(decoder: _Decoder) -> str:
        token, _ = decoder.best([vocab.digits[d] for d in "01" if d in vocab.digits])
        if token < 0 or vocab.texts[token] == "1":
            return decoder.force("1") if token < 0 else _fed(decoder, token, vocab)
        out = _fed(decoder, token, vocab) + decoder.force(".")
        digits = [vocab.digits[d] for d in "0123456789" if d in vocab.digits]
        token, _ = decoder.best(digits)
        out += _fed(decoder, token, vocab)
        more, score = decoder.best(digits)
        if decoder.best(vocab.brace)[1] < score:
            out += _fed(decoder, more, vocab)
        return out

    def answer(prompt: str) -> str:
        text = _prompt_text(prompt)
        decoder = _Decoder(model, prompt + ANSWER_PREFILL)
        out = ANSWER_PREFILL + label(decoder) + decoder.force('", "evidence": [')
        pieces = [(i, t) for i, t in vocab.quotable if t in text] if text.strip() else []
        starts = ({m.start() for m in re.finditer(r"\w+", text)}
                  or {m.start() for m in re.finditer(r"\S+", text)})
        stated: list[str] = []
        while text.strip() and starts and len(stated) < phrases:
            out += decoder.force('"') if not stated else decoder.force(', "')
            stated.append(quote(decoder, text, pieces, starts))
            out += stated[-1] + decoder.force('"')
            if decoder.best(vocab.comma)[1] <= decoder.best(vocab.bracket)[1]:
                break
        out += decoder.force('], "confidence": ')
        out += number(decoder)
        return out + "}"

    return answer


def _word_end(text: str, end: int) -> bool:
    """Whether a quote ending at character ``end`` ends a word (not inside one)."""
    return end >= len(text) or not (text[end - 1].isalnum() and text[end].isalnum())


def _fed(decoder: _Decoder, token: int, vocab: _Vocabulary) -> str:
    decoder.feed([token])
    return vocab.texts[token]


def label_token_ids(model: TextModel, labels: Sequence[str]) -> list[list[int]]:
    ids = [list(model.tokenizer(x, add_special_tokens=False)["input_ids"]) for x in labels]
    for i, a in enumerate(ids):
        if not a:
            raise InvalidInputError("labels", "every label must spell at least one token",
                                    labels[i])
        for j, b in enumerate(ids):
            if i != j and b[:len(a)] == a:
                raise InvalidInputError("labels", "no label's tokens may begin another's (the "
                                        "label probabilities would not be comparable)",
                                        [labels[i], labels[j]])
    return ids
