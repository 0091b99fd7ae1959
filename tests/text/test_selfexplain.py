"""Self-explanation consistency (LLM.md 2.6) on tiny models with a planted answer.

The tiny BERT classifier's label is decided by the planted keyword "zorp" alone. A stand-in
self-explainer states the classifier's own label with (a) the keyword as evidence, which
must agree with integrated gradients far beyond chance, matter under removal and flip the
label when redacted, or (b) random words, which must look like the permutation null and
flip nothing. The parser must catch malformed, incomplete, out-of-range and hallucinated
answers. A tiny random Llama with a byte-level BPE tokenizer and a ChatML template runs the
causal-LM path (prompt, greedy answer, IG over the input text only, deletion).
"""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

import tiny_selfexplain as ts
from tiny import KEYWORD, keyword_classifier, keyword_data
from xai_sandbox.errors import InvalidInputError, UnsupportedModelError
from xai_sandbox.explainers.explanation import Explanation
from xai_sandbox.text.model import TextModel
from xai_sandbox.text.selfexplain import (
    ANSWER_PREFILL,
    SELF_EXPLANATION_SCHEMA,
    LabelScorer,
    SelfExplanationReport,
    agreement,
    aopc,
    build_prompt,
    check_self_explanation,
    comprehensiveness,
    constrained_answerer,
    delete_spans,
    evidence_mask,
    parse_rate,
    parse_self_explanation,
    self_explanation_schema,
    sufficiency,
    summarise,
)

LABELS = ("absent", "present")
IG = {"n_steps": 64, "tolerance": 0.5}   # the keyword model saturates: keep IG affordable
TEXT = "the loan fee was late and the fee was high"


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def keyword(tmp_path_factory: pytest.TempPathFactory) -> TextModel:
    return keyword_classifier(tmp_path_factory.mktemp("selfexplain"))


@pytest.fixture(scope="module")
def held_out() -> tuple[list[str], list[str]]:
    texts, labels = keyword_data(40, seed=11)
    present = [t for t, y in zip(texts, labels, strict=True) if y][:6]
    absent = [t for t, y in zip(texts, labels, strict=True) if not y][:6]
    return present, absent


@pytest.fixture(scope="module")
def truthful(keyword: TextModel, held_out: tuple[list[str], list[str]]
             ) -> list[SelfExplanationReport]:
    return [check_self_explanation(keyword, text, LABELS, answer=ts.keyword_explainer(keyword),
                                   random_state=i, **IG)
            for i, text in enumerate(held_out[0])]


@pytest.fixture(scope="module")
def random_present(keyword: TextModel, held_out: tuple[list[str], list[str]]
                   ) -> list[SelfExplanationReport]:
    return [check_self_explanation(keyword, text, LABELS,
                                   answer=ts.random_explainer(keyword, seed=i),
                                   random_state=i, **IG)
            for i, text in enumerate(held_out[0])]


@pytest.fixture(scope="module")
def random_absent(keyword: TextModel, held_out: tuple[list[str], list[str]]
                  ) -> list[SelfExplanationReport]:
    return [check_self_explanation(keyword, text, LABELS,
                                   answer=ts.random_explainer(keyword, seed=100 + i),
                                   random_state=i, **IG)
            for i, text in enumerate(held_out[1])]


@pytest.fixture(scope="module")
def lm() -> TextModel:
    texts = keyword_data(40, seed=3)[0]
    corpus = [build_prompt(None, t, ("slow", "fast")).prompt for t in texts]
    corpus += [ts.answer_json("slow", ["bank", "late fee"]), ts.CHATML]
    return ts.bpe_llama(corpus)


# ---------------------------------------------------------------------------- the parser
def test_a_valid_answer_is_read_from_prose_and_fences_with_all_occurrences() -> None:
    raw = ("Here you go:\n```json\n" + json.dumps(
        {"label": "present", "evidence": [" fee ", "late", "fee"], "confidence": 0.75,
         "note": "extra keys are ignored"}) + "\n```\n{\"label\": \"absent\"}")
    got = parse_self_explanation(raw, TEXT, LABELS)
    assert got.valid and got.reason is None
    assert got.label == "present" and got.confidence == 0.75 and got.answer_first
    assert got.evidence == ("fee", "late")            # stripped, duplicates counted once
    assert got.spans == ((9, 12), (17, 21), (30, 33))  # both occurrences of "fee"
    assert got.hallucinated == () and got.hallucination_rate == 0.0
    assert json.loads(json.dumps(got.to_dict()))["found"] == ["fee", "late"]


def test_hallucinated_evidence_is_counted_not_rejected() -> None:
    got = parse_self_explanation(ts.answer_json("present", ["fee", "moon", "Fee"]), TEXT,
                                 LABELS)
    assert got.valid
    assert got.found == ("fee",) and got.hallucinated == ("moon", "Fee")   # case-sensitive
    assert got.hallucination_rate == pytest.approx(2 / 3)


@pytest.mark.parametrize(("raw", "reason"), [
    ("I think it is present.", "no JSON object"),
    ('{"label": "present", "evidence": ["fee"], "confidence": 0.9', "malformed JSON"),
    ("{'label': 'present'}", "malformed JSON"),
    ('{"label": "present", "evidence": ["fee"]}', "confidence: Field required"),
    ('{"evidence": ["fee"], "confidence": 0.5}', "label: Field required"),
    ('{"label": "present", "confidence": 0.5}', "evidence: Field required"),
    ('{"label": "maybe", "evidence": ["fee"], "confidence": 0.5}', "label: Value error"),
    ('{"label": "Present", "evidence": ["fee"], "confidence": 0.5}', "label: Value error"),
    ('{"label": "present", "evidence": ["fee"], "confidence": 1.5}', "less than or equal"),
    ('{"label": "present", "evidence": ["fee"], "confidence": -0.1}', "greater than or equal"),
    ('{"label": "present", "evidence": ["fee"], "confidence": "0.9"}', "valid number"),
    ('{"label": "present", "evidence": ["fee"], "confidence": true}', "valid number"),
    ('{"label": "present", "evidence": ["fee"], "confidence": NaN}', "finite number"),
    ('{"label": "present", "evidence": [], "confidence": 0.5}', "evidence: List should"),
    ('{"label": "present", "evidence": ["  "], "confidence": 0.5}', "evidence.0: String"),
    ('{"label": "present", "evidence": "fee", "confidence": 0.5}', "evidence: Input should"),
    ('{"label": 1, "evidence": ["fee"], "confidence": 0.5}', "label: Input should"),
])
def test_malformed_and_off_schema_answers_are_invalid_with_a_reason(raw: str, reason: str
                                                                    ) -> None:
    got = parse_self_explanation(raw, TEXT, LABELS)
    assert not got.valid and got.label is None and got.evidence == ()
    assert got.reason is not None and reason in got.reason, got.reason
    assert got.raw == raw


def test_the_first_decodable_object_is_read_and_the_json_schema_agrees() -> None:
    good = {"label": "absent", "evidence": ["late"], "confidence": 0}
    got = parse_self_explanation("{broken} then " + json.dumps(good), TEXT, LABELS)
    assert got.valid and got.label == "absent" and got.confidence == 0.0
    schema = self_explanation_schema(LABELS)
    jsonschema.validate(good, schema)
    assert schema["properties"]["label"]["enum"] == list(LABELS)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(dict(good, confidence=2), SELF_EXPLANATION_SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(dict(good, label="maybe"), schema)


def test_parser_inputs_are_checked() -> None:
    with pytest.raises(InvalidInputError, match="raw"):
        parse_self_explanation(None, TEXT, LABELS)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="labels"):
        parse_self_explanation("{}", TEXT, ["present"])
    with pytest.raises(InvalidInputError, match="labels"):
        parse_self_explanation("{}", TEXT, ["a", "a"])
    with pytest.raises(InvalidInputError, match="text"):
        parse_self_explanation("{}", "  ", LABELS)


# ---------------------------------------------------------------------------- words, agreement
def test_evidence_mask_marks_words_overlapping_a_stated_span() -> None:
    words = [{"text": w, "start": s, "end": s + len(w), "score": 0.0}
             for w, s in (("the", 0), ("loan", 4), ("fee", 9))]
    assert evidence_mask(words, [(5, 7)]).tolist() == [False, True, False]   # part of a word
    assert evidence_mask(words, [(3, 4)]).tolist() == [False, False, False]  # the space only
    assert evidence_mask(words, [(0, 3), (9, 12)]).tolist() == [True, False, True]
    with pytest.raises(InvalidInputError, match="spans"):
        evidence_mask(words, [(4, 2)])


def test_agreement_is_perfect_and_significant_when_evidence_tops_the_scores() -> None:
    scores = np.linspace(1.0, 0.0, 20)
    mask = np.zeros(20, dtype=bool)
    mask[:2] = True
    got = agreement(scores, mask, n_permutations=2000, random_state=0)
    for name in ("precision_at_k", "recall_at_k", "auprc"):
        assert got[name]["value"] == 1.0
        assert got[name]["p_value"] < 0.02 and got[name]["z"] > 3
    # Chance of a random pair being the top two: 1/190; the null mean of precision@2 is 0.1.
    assert got["precision_at_k"]["null_mean"] == pytest.approx(0.1, abs=0.02)
    worst = agreement(scores[::-1], mask, n_permutations=500)
    assert worst["precision_at_k"]["value"] == 0.0 and worst["precision_at_k"]["p_value"] == 1.0
    wider = agreement(scores, mask, k=5, n_permutations=100)
    assert wider["precision_at_k"]["value"] == pytest.approx(2 / 5)
    assert wider["recall_at_k"]["value"] == 1.0


def test_auprc_matches_scikit_learn_with_ties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        scores = rng.integers(0, 4, size=12).astype(float)     # many ties
        mask = rng.random(12) < 0.3
        if not 0 < mask.sum() < 12:
            continue
        got = agreement(scores, mask, n_permutations=20)["auprc"]["value"]
        assert got == pytest.approx(average_precision_score(mask, scores))


def test_agreement_null_is_calibrated_for_random_evidence() -> None:
    rng = np.random.default_rng(1)
    p_values = []
    for seed in range(200):
        scores = rng.normal(size=15)
        mask = np.zeros(15, dtype=bool)
        mask[rng.choice(15, size=3, replace=False)] = True
        p_values.append(agreement(scores, mask, n_permutations=200,
                                  random_state=seed)["auprc"]["p_value"])
    assert np.mean(np.array(p_values) < 0.05) < 0.1
    assert 0.4 < float(np.mean(p_values)) < 0.6


def test_agreement_inputs_are_checked() -> None:
    with pytest.raises(InvalidInputError, match="mask"):
        agreement([0.1, 0.2, 0.3], [True, True, True])
    with pytest.raises(InvalidInputError, match="mask"):
        agreement([0.1, 0.2, 0.3], [True, False])
    with pytest.raises(InvalidInputError, match="word_scores"):
        agreement([0.1, float("nan")], [True, False])
    with pytest.raises(InvalidInputError, match="k"):
        agreement([0.1, 0.2, 0.3], [True, False, False], k=4)
    with pytest.raises(InvalidInputError, match="n_permutations"):
        agreement([0.1, 0.2, 0.3], [True, False, False], n_permutations=5)


# ---------------------------------------------------------------------------- ERASER
def test_delete_spans_removes_words_and_one_adjoining_space() -> None:
    assert delete_spans("a zorp b", [(2, 6)]) == "a b"
    assert delete_spans("zorp a b", [(0, 4)]) == "a b"
    assert delete_spans("a b zorp", [(4, 8)]) == "a b"
    assert delete_spans("a zorp fee b", [(2, 6), (7, 10)]) == "a b"
    assert delete_spans("zorp", [(0, 4)]) == ""


def test_removing_the_keyword_is_comprehensive_and_keeping_it_sufficient(
        keyword: TextModel) -> None:
    text = "the bank zorp was slow today"
    words = [{"text": w, "start": text.index(w), "end": text.index(w) + len(w),
              "score": float(w == KEYWORD)} for w in text.split()]
    zorp, bank = [words[2]], [words[1]]
    for removal in ("pad", "delete"):
        scorer = LabelScorer(keyword, LABELS, "present", removal)
        assert scorer(text) > 0.9
        assert comprehensiveness(scorer, text, zorp) > 0.8
        assert sufficiency(scorer, text, zorp, words) < 0.1
        assert abs(comprehensiveness(scorer, text, bank)) < 0.1
        assert sufficiency(scorer, text, bank, words) > 0.8
    pad = LabelScorer(keyword, LABELS, "present", "pad")
    assert pad.probabilities(text).sum() == pytest.approx(1.0)
    got = aopc(pad, text, words)
    assert got["k"] == [1, 1, 1, 2, 3]     # ceil of 1/5/10/20/50 % of 6 words, at least 1
    assert got["aopc_comprehensiveness"] > 0.8 and got["aopc_sufficiency"] < 0.1


# ---------------------------------------------------------------------------- the check
def test_truthful_keyword_evidence_agrees_with_ig_beyond_chance(
        truthful: list[SelfExplanationReport]) -> None:
    assert all(r.valid and r.answer.found == (KEYWORD,) for r in truthful)
    assert all(r.agreement is not None and r.agreement["precision_at_k"]["value"] == 1.0
               for r in truthful)
    summary = summarise(truthful)
    assert summary["parse_failure_rate"] == 0.0 and summary["hallucination_rate"] == 0.0
    pooled = summary["agreement"]
    assert pooled["n_examples"] == len(truthful)
    for name in ("precision_at_k", "recall_at_k", "auprc"):
        assert pooled[name]["value"] == pytest.approx(1.0)
        assert pooled[name]["p_value"] < 0.01 and pooled[name]["z"] > 3
    assert summary["rationales"]["evidence"]["comprehensiveness"] > 0.8
    assert summary["rationales"]["evidence"]["sufficiency"] < 0.1
    # IG's own top word is the keyword, so both rationales coincide.
    assert summary["rationales"]["ig_top_k"]["comprehensiveness"] == pytest.approx(
        summary["rationales"]["evidence"]["comprehensiveness"])
    assert summary["redaction"]["flip_rate"] == 1.0
    assert summary["redaction"]["model_flip_rate"] == 1.0
    assert summary["removal"] == ["pad"]
    assert all(r.redaction is not None and KEYWORD not in r.redaction.text.split()
               for r in truthful)


def test_random_words_are_indistinguishable_from_the_null(
        random_absent: list[SelfExplanationReport]) -> None:
    assert all(r.valid and r.answer.label == "absent" for r in random_absent)
    summary = summarise(random_absent)
    for name in ("precision_at_k", "auprc"):
        assert summary["agreement"][name]["p_value"] > 0.05
        assert abs(summary["agreement"][name]["mean_z"]) < 1.0
    assert summary["redaction"]["flip_rate"] == 0.0


def test_random_non_keyword_evidence_neither_agrees_nor_matters(
        random_present: list[SelfExplanationReport],
        truthful: list[SelfExplanationReport]) -> None:
    summary = summarise(random_present)
    for name in ("precision_at_k", "auprc"):
        assert summary["agreement"][name]["p_value"] > 0.05
    assert abs(summary["rationales"]["evidence"]["comprehensiveness"]) < 0.1
    assert summary["rationales"]["evidence"]["sufficiency"] > 0.8
    assert summary["rationales"]["ig_top_k"]["comprehensiveness"] > 0.8
    assert summary["redaction"]["flip_rate"] == 0.0        # the keyword is still there
    # The same texts, stated truthfully: IG did not depend on what the explainer said.
    for a, b in zip(random_present, truthful, strict=True):
        assert a.scores == pytest.approx(b.scores)


def test_report_is_json_safe_and_an_explanation(keyword: TextModel,
                                                truthful: list[SelfExplanationReport]
                                                ) -> None:
    report = truthful[0]
    blob = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert blob["removal"] == "pad" and blob["attribution"] == "integrated_gradients"
    assert [w["text"] for w in blob["words"]] == report.text.split()
    explanation = report.as_explanation(keyword)
    assert isinstance(explanation, Explanation)
    assert explanation.method == "self_explanation"
    assert explanation.values.shape == (1, len(report.text.split()))
    assert explanation.parameters["evidence_mask"] == [w == KEYWORD
                                                       for w in report.text.split()]
    assert int(np.argmax(explanation.values[0])) == report.text.split().index(KEYWORD)
    assert explanation.target.tolist() == [LABELS.index("present")]
    assert explanation.output_space == "logit"
    again = Explanation.from_json(explanation.to_json())
    assert again.parameters["agreement"] == report.agreement


def test_invalid_and_hallucinated_answers_are_counted(keyword: TextModel,
                                                      truthful: list[SelfExplanationReport]
                                                      ) -> None:
    text = "the bank zorp was slow"
    broken = check_self_explanation(keyword, text, LABELS,
                                    answer=ts.fixed_answer('{"label": "present", '))
    assert not broken.valid and broken.words == () and broken.agreement is None
    with pytest.raises(InvalidInputError, match="report"):
        broken.as_explanation(keyword)
    invented = check_self_explanation(
        keyword, text, LABELS, answer=ts.fixed_answer(ts.answer_json("present", ["moon"])),
        **IG)
    assert invented.valid and invented.answer.hallucinated == ("moon",)
    assert not invented.evidence.any() and invented.agreement is None
    assert invented.rationales is None and invented.redaction is None
    summary = summarise([*truthful[:2], broken, invented])
    assert summary["parse_failure_rate"] == pytest.approx(0.25)
    assert summary["parse_failures"] == {"malformed JSON": 1}
    assert summary["hallucination_rate"] == pytest.approx(1 / 3)
    assert summary["answers_with_hallucination_rate"] == pytest.approx(1 / 3)
    assert summary["agreement"]["n_examples"] == 2


def test_check_inputs_are_checked(keyword: TextModel) -> None:
    with pytest.raises(InvalidInputError, match="answer"):
        check_self_explanation(keyword, TEXT, LABELS)        # a classifier cannot answer
    with pytest.raises(InvalidInputError, match="labels"):
        check_self_explanation(keyword, TEXT, ("absent", "maybe"),
                               answer=ts.fixed_answer("{}"))
    with pytest.raises(InvalidInputError, match="answer"):
        check_self_explanation(keyword, TEXT, LABELS, answer=lambda prompt: 3)  # type: ignore
    with pytest.raises(InvalidInputError, match="text"):
        check_self_explanation(keyword, "", LABELS, answer=ts.fixed_answer("{}"))
    with pytest.raises(InvalidInputError, match="reports"):
        summarise([])


# ---------------------------------------------------------------------------- causal LM
def test_causal_lm_path_attributes_the_input_text_only(lm: TextModel) -> None:
    text = "the bank was slow today, again"
    prompt = build_prompt(lm, text, ("slow", "fast"))
    assert prompt.prompt.startswith("<|im_start|>user\n")         # the chat template
    assert prompt.prompt[prompt.start:prompt.start + len(text)] == text
    report = check_self_explanation(
        lm, text, ("slow", "fast"), n_steps=16, tolerance=0.5,
        answer=ts.fixed_answer(ts.answer_json("slow", ["bank", "slow today"])))
    assert report.valid and report.removal == "delete"
    # Byte-level BPE offsets include the leading space; words are still the text's words.
    assert [w["text"] for w in report.words] == text.split()
    assert report.evidence.tolist() == [False, True, False, True, True, False]
    # Exactly the tokens with characters of the input text, no instruction or template token.
    full_text = prompt.prompt + ANSWER_PREFILL
    full = lm.encode(full_text)
    first, last = prompt.start, prompt.start + len(text)
    inside = [pos for pos, (s, e) in enumerate(full.offsets[0].tolist())
              if not full.special[0, pos] and full_text[max(s, first):min(e, last)].strip()]
    assert sorted(t for w in report.words for t in w["tokens"]) == inside
    assert report.probabilities is not None and sum(report.probabilities) == pytest.approx(1)
    assert report.rationales is not None and report.aopc is not None
    assert report.redaction is not None and report.redaction.text == "the was again"
    explanation = report.as_explanation(lm)
    assert explanation.output_space == "log_probability"
    assert explanation.values.shape == (1, 6)


def test_causal_lm_greedy_answer_is_parsed_and_failures_recorded(lm: TextModel) -> None:
    report = check_self_explanation(lm, "the bank was slow", ("slow", "fast"),
                                    max_new_tokens=12, decoding="greedy")
    assert report.answer.raw.startswith(ANSWER_PREFILL)       # the forced answer-first start
    assert not report.valid and report.answer.reason      # a random model writes no JSON
    assert summarise([report])["parse_failure_rate"] == 1.0
    with pytest.raises(InvalidInputError, match="labels"):
        LabelScorer(lm, ("fee", "fee fee"), "fee", "delete")   # one label begins the other


def test_constrained_answers_of_a_random_model_parse_and_quote_whole_words(lm: TextModel
                                                                         ) -> None:
    """Constrained decoding: whatever the model's weights, the answer is the schema's JSON,
    its label one of the labels and every quote a run of whole words of the text."""
    labels = ("slow", "fast")
    answer = constrained_answerer(lm, labels)
    texts = keyword_data(8, seed=5)[0] + ["the bank's fee, again: late!", "x"]
    for text in texts:
        raw = answer(build_prompt(lm, text, labels).prompt)
        got = parse_self_explanation(raw, text, labels)
        assert got.valid, (raw, got.reason)
        assert got.answer_first and 1 <= len(got.evidence) <= 3
        assert got.hallucinated == () and got.confidence is not None
        assert 0.0 <= got.confidence <= 1.0
        jsonschema.validate(json.loads(raw), self_explanation_schema(labels))
        for quote in got.evidence:
            start = text.index(quote)
            end = start + len(quote)
            assert start == 0 or not text[start - 1].isalnum() or not quote[0].isalnum()
            assert end == len(text) or not (text[end - 1].isalnum() and text[end].isalnum())
    # The same prompt, the same answer; a prompt without the text block is refused.
    prompt = build_prompt(lm, texts[0], labels).prompt
    assert answer(prompt) == answer(prompt)
    with pytest.raises(InvalidInputError, match="prompt"):
        answer("no text block here")
    # An empty text (everything redacted): an empty evidence list, the label still read.
    empty = json.loads(answer(build_prompt(lm, "", labels).prompt))
    assert empty["evidence"] == [] and empty["label"] in labels


def test_the_default_causal_lm_answer_is_constrained_and_checked(lm: TextModel,
                                                                keyword: TextModel) -> None:
    report = check_self_explanation(lm, "the bank was slow today", ("slow", "fast"),
                                    n_steps=16, tolerance=0.5)
    assert report.valid and report.answer.hallucinated == ()
    assert report.evidence.any() and report.redaction is not None
    with pytest.raises(InvalidInputError, match="decoding"):
        check_self_explanation(lm, "the bank", ("slow", "fast"),
                               decoding="beam")  # type: ignore[arg-type]
    with pytest.raises(UnsupportedModelError, match="causal LM"):
        constrained_answerer(keyword, LABELS)


def test_parse_rate_counts_valid_answers_reasons_and_accuracy(lm: TextModel) -> None:
    texts = ["the bank was slow", "a fast answer", "late fee"]
    answers = iter([ts.answer_json("slow", ["bank"]), '{"label": "slow"',
                    ts.answer_json("fast", ["moon"])])
    got = parse_rate(lm, texts, ("slow", "fast"), answer=lambda prompt: next(answers),
                     truth=["slow", "fast", "slow"])
    assert got["n"] == 3 and got["n_valid"] == 2 and got["rate"] == pytest.approx(2 / 3)
    assert got["failures"] == {"malformed JSON": 1} and got["decoding"] == "given"
    assert got["labels"] == {"slow": 1, "fast": 1}
    assert got["label_accuracy"] == pytest.approx(1 / 2)
    assert got["answers_with_hallucination_rate"] == pytest.approx(1 / 2)
    threads = torch.get_num_threads()
    constrained = parse_rate(lm, texts, ("slow", "fast"), threads=1)
    assert constrained["rate"] == 1.0 and constrained["decoding"] == "constrained"
    assert torch.get_num_threads() == threads
    with pytest.raises(InvalidInputError, match="threads"):
        parse_rate(lm, texts, ("slow", "fast"), threads=0)
    with pytest.raises(InvalidInputError, match="truth"):
        parse_rate(lm, texts, ("slow", "fast"), truth=["slow"])
    with pytest.raises(InvalidInputError, match="texts"):
        parse_rate(lm, [], ("slow", "fast"))


def test_no_hook_survives_a_failing_answer(keyword: TextModel) -> None:
    calls: list[str] = []

    def answer(prompt: str) -> str:
        calls.append(prompt)
        if len(calls) > 1:                     # the redaction's question, after IG ran
            raise RuntimeError("the explainer went away")
        return ts.answer_json("present", [KEYWORD])

    with pytest.raises(RuntimeError, match="went away"):
        check_self_explanation(keyword, "the bank zorp was slow", LABELS, answer=answer, **IG)
    assert len(calls) == 2
    for module in keyword.module.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
        assert not module._backward_hooks
