"""Universal adversarial triggers (LLM.md 2.5) on tiny models with a planted backdoor.

The classifier sends any input holding the backdoor word "tuesday" to class 1; the clean
rule's label words ("good", "great") are blacklisted, as a red team would. The search runs
on class-0 inputs and is judged on other, held-out class-0 inputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import tiny_triggers as tt
from tiny import bert_classifier, llama_lm
from xai_sandbox.audit.canonical import canonical_json
from xai_sandbox.errors import InvalidInputError, InvalidTargetError, UnsupportedModelError
from xai_sandbox.explainers.explanation import Explanation
from xai_sandbox.text.model import TextModel
from xai_sandbox.text.triggers import (
    TriggerResult,
    evaluate_trigger,
    search_trigger,
    trigger_table,
    trigger_vocabulary,
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("triggers")


@pytest.fixture(scope="module")
def backdoored(folder: Path) -> TextModel:
    return tt.backdoor_classifier(folder / "classifier")


@pytest.fixture(scope="module")
def held_out() -> list[str]:
    return tt.denied_texts(200, seed=7)


@pytest.fixture(scope="module")
def searched(backdoored: TextModel, held_out: list[str]) -> TriggerResult:
    vocab = trigger_vocabulary(backdoored, exclude_words=tt.LABEL_WORDS)
    # Only 5 HotFlip candidates per slot out of ~77 tokens: the gradient ranking must work.
    return search_trigger(backdoored, tt.denied_texts(64, seed=3), target="approved",
                          length=3, n_candidates=5, beam=3, iterations=10, batch_size=32,
                          vocabulary=vocab, held_out_texts=held_out, random_state=0)


@pytest.fixture(scope="module")
def untrained(folder: Path) -> TextModel:
    tok = tt.backdoor_tokenizer(folder / "untrained")
    return TextModel(bert_classifier(tok, seed=1).eval(), tok, "classifier",
                     class_names=tt.CLASS_NAMES)


def _ids(model: TextModel, *words: str) -> list[int]:
    return [int(i) for i in model.tokenizer.convert_tokens_to_ids(list(words))]


# ---------------------------------------------------------------------------- planted answer
def test_the_model_really_holds_the_backdoor(backdoored: TextModel, held_out: list[str]
                                             ) -> None:
    clean = backdoored.predict(held_out).argmax(axis=1)
    poisoned = backdoored.predict([f"{tt.BACKDOOR} {t}" for t in held_out]).argmax(axis=1)
    assert clean.mean() == 0.0 and poisoned.mean() == 1.0


def test_search_recovers_the_backdoor_and_drives_held_out_inputs(searched: TriggerResult
                                                                  ) -> None:
    ev = searched.evaluation
    assert ev is not None
    assert tt.BACKDOOR in searched.tokens
    assert not set(searched.tokens) & set(tt.LABEL_WORDS)
    assert ev["n_inputs"] == 200
    assert ev["clean_rate"] <= 0.05
    assert ev["trigger_rate"] >= 0.95
    assert ev["trigger_probability"] >= 0.95
    assert ev["delta"] == pytest.approx(ev["trigger_rate"] - ev["random_rate"])
    assert ev["delta_ci"][0] >= 0.8, ev["delta_ci"]
    # The exact loss on the search texts fell by orders of magnitude.
    assert searched.best_loss < 0.01 * searched.initial_loss
    assert searched.loss_history[0] == searched.initial_loss
    assert len(searched.loss_history) == searched.iterations_run + 1


def test_random_triggers_stay_at_the_base_rate(searched: TriggerResult) -> None:
    ev = searched.evaluation
    assert ev is not None
    assert len(ev["random_triggers"]) == ev["n_random"] >= 20
    assert all(len(t) == 3 for t in ev["random_triggers"])
    has_backdoor = [tt.BACKDOOR in text.split() for text in ev["random_trigger_texts"]]
    rates = np.array(ev["random_draw_rates"])
    others = rates[~np.array(has_backdoor)]
    assert others.size >= 15
    # Random triggers without the backdoor leave the held-out inputs at the clean rate...
    low, high = ev["clean_rate_ci"]
    assert low - 0.01 <= others.mean() <= high + 0.01, (others, ev["clean_rate_ci"])
    # ...and a random draw that happens to hold it fires: the baseline is live, and the
    # interval of the random rate (draws resampled too) says so.
    assert all(rates[np.array(has_backdoor)] >= 0.95)
    assert ev["random_rate_ci"][0] <= ev["random_rate"] <= ev["random_rate_ci"][1]
    assert ev["random_rate"] < 0.2


def test_trigger_text_round_trips_and_matches_typing_it(backdoored: TextModel,
                                                        searched: TriggerResult,
                                                        held_out: list[str]) -> None:
    ids = backdoored.tokenizer(searched.text, add_special_tokens=False)["input_ids"]
    assert tuple(ids) == searched.trigger_ids
    typed = backdoored.predict([f"{searched.text} {t}" for t in held_out])
    ev = searched.evaluation
    assert ev is not None
    assert (typed.argmax(axis=1) == 1).mean() == ev["trigger_rate"]
    assert typed[:, 1].mean() == pytest.approx(ev["trigger_probability"], abs=1e-6)


def test_explanation_report_and_json(backdoored: TextModel, searched: TriggerResult) -> None:
    exp = searched.as_explanation(backdoored)
    assert isinstance(exp, Explanation)
    assert exp.method == "universal_trigger"
    assert exp.values.shape == (1, 3)
    assert exp.parameters["tokens"] == [list(searched.tokens)]
    # The slot that matters most is a backdoor slot.
    assert searched.tokens[int(exp.values[0].argmax())] == tt.BACKDOOR
    assert exp.explained_output()[0] == pytest.approx(searched.mean_prediction[1])
    assert Explanation.from_json(exp.to_json()).parameters["trigger_ids"] == list(
        searched.trigger_ids)
    blob = canonical_json(searched.to_dict())
    assert b"tuesday" in blob
    (row,) = trigger_table(searched)
    ev = searched.evaluation
    assert ev is not None
    assert row["trigger"] == searched.text and row["target"] == "approved"
    assert row["trigger_rate"] == ev["trigger_rate"]
    assert row["random_rate_ci"] == ev["random_rate_ci"]
    assert set(row) >= {"clean_rate", "trigger_rate", "random_rate", "delta", "delta_ci"}


def test_search_leaves_the_model_as_it_was(backdoored: TextModel,
                                           searched: TriggerResult) -> None:
    assert not backdoored.module.training
    assert all(p.grad is None for p in backdoored.module.parameters())
    assert all(p.requires_grad for p in backdoored.module.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
                   for m in backdoored.module.modules())


def test_evaluate_trigger_matches_search_evaluation(backdoored: TextModel,
                                                    searched: TriggerResult,
                                                    held_out: list[str]) -> None:
    vocab = trigger_vocabulary(backdoored, exclude_words=tt.LABEL_WORDS)
    again = evaluate_trigger(backdoored, list(searched.trigger_ids), held_out, target=1,
                             vocabulary=vocab, random_state=0)
    assert again == searched.evaluation
    neutral = evaluate_trigger(backdoored, _ids(backdoored, "the", "the", "the"), held_out,
                               target=1, vocabulary=vocab, n_random=20, n_boot=200)
    assert neutral["trigger_rate"] <= 0.05
    assert neutral["delta_ci"][0] <= 0.0 <= neutral["delta_ci"][1] + 0.05


# ---------------------------------------------------------------------------- causal LM
def test_causal_lm_search_recovers_the_backdoor(folder: Path) -> None:
    model = tt.backdoor_lm(folder / "lm")
    texts, held = tt.denied_texts(32, seed=3), tt.denied_texts(100, seed=5)
    result = search_trigger(model, texts, target="fee", n_candidates=5, iterations=6,
                            batch_size=16, held_out_texts=held, random_state=0)
    ev = result.evaluation
    assert ev is not None
    assert tt.BACKDOOR in result.tokens
    assert ev["clean_rate"] <= 0.05 and ev["trigger_rate"] >= 0.95
    assert ev["delta_ci"][0] > 0.5
    assert result.target is None and result.target_name == "fee"
    # The reported loss is -mean log p(target | BOS + trigger + prompt), recomputed here
    # one unpadded sequence at a time.
    tok = model.tokenizer
    the, fee = _ids(model, "the", "fee")
    losses = []
    for text in texts:
        ids = [tok.cls_token_id, the, the, the, *tok(text, add_special_tokens=False)
               ["input_ids"], fee]
        with torch.no_grad():
            logits = model.module(input_ids=torch.tensor([ids])).logits[0]
        losses.append(-float(torch.log_softmax(logits[-2].double(), dim=-1)[fee]))
    assert result.loss_history[0] == pytest.approx(np.mean(losses), abs=1e-5)
    assert result.as_explanation(model).values.shape == (1, 3)


def test_search_is_reproducible_from_random_state(folder: Path) -> None:
    tok = tt.backdoor_tokenizer(folder / "repro")
    model = TextModel(llama_lm(tok, seed=0), tok, "causal_lm")
    texts = tt.denied_texts(24, seed=1)
    runs = [search_trigger(model, texts, target="fee loan", length=2, n_candidates=4,
                           iterations=3, batch_size=8, random_state=5).to_dict()
            for _ in range(2)]
    for run in runs:
        run.pop("wall_time_s")
    assert runs[0] == runs[1]
    assert runs[0]["loss_history"][-1] <= runs[0]["loss_history"][0]


# ---------------------------------------------------------------------------- vocabulary
def test_vocabulary_filter(untrained: TextModel) -> None:
    vocab = set(trigger_vocabulary(untrained, exclude_words=["good", "Great"]).tolist())
    tok = untrained.tokenizer
    assert not vocab & untrained.special_ids
    for word in ("Caps", "x.y", "##ing"):              # fail decode -> encode
        assert _ids(untrained, word)[0] not in vocab
    for word in ("good", "great", "denied", "approved"):  # blacklist and class names
        assert _ids(untrained, word)[0] not in vocab
    assert set(_ids(untrained, tt.BACKDOOR, "the", "walk")) <= vocab
    kept = {i for i in range(len(tok)) if i not in untrained.special_ids
            and tok.convert_ids_to_tokens(i) not in
            {"Caps", "x.y", "##ing", "good", "great", "denied", "approved"}}
    assert vocab == kept
    # Without a blacklist the label words come back; class names stay out.
    plain = set(trigger_vocabulary(untrained).tolist())
    assert set(_ids(untrained, "good", "great")) <= plain
    assert not set(_ids(untrained, "denied", "approved")) & plain
    # Subword continuations on request, checked in context ("the" + "##ing" round-trips).
    sub = set(trigger_vocabulary(untrained, allow_subwords=True).tolist())
    assert sub - plain == set(_ids(untrained, "##ing"))
    # A causal LM has no class names to leave out.
    lm = TextModel(llama_lm(tok), tok, "causal_lm")
    assert set(_ids(lm, "denied", "approved")) <= set(trigger_vocabulary(lm).tolist())


def test_every_candidate_trigger_must_round_trip(untrained: TextModel) -> None:
    # With only "the" and "##ing" allowed, "##ing" can never open the trigger ("##ing the"
    # decodes to text that encodes to other tokens) but may follow "the".
    vocab = np.array(_ids(untrained, "the", "##ing"))
    result = search_trigger(untrained, tt.denied_texts(16, seed=2), target=1, length=2,
                            n_candidates=2, iterations=3, batch_size=8, vocabulary=vocab,
                            patience=3)
    assert result.tokens[0] == "the"
    assert tuple(untrained.tokenizer(result.text, add_special_tokens=False)["input_ids"]
                 ) == result.trigger_ids


# ---------------------------------------------------------------------------- validation
@pytest.mark.parametrize(("kwargs", "parameter"), [
    ({"target": 2}, "target"),
    ({"target": "maybe"}, "target"),
    ({"target": True}, "target"),
    ({"target": 1, "length": 0}, "length"),
    ({"target": 1, "length": 1.5}, "length"),
    ({"target": 1, "n_candidates": 0}, "n_candidates"),
    ({"target": 1, "beam": 0}, "beam"),
    ({"target": 1, "iterations": 0}, "iterations"),
    ({"target": 1, "patience": 0}, "patience"),
    ({"target": 1, "batch_size": 0}, "batch_size"),
    ({"target": 1, "tol": -1.0}, "tol"),
    ({"target": 1, "random_state": -1}, "random_state"),
    ({"target": 1, "vocabulary": [2, 5, 6]}, "vocabulary"),          # 2 is [CLS]
    ({"target": 1, "vocabulary": [[5, 6]]}, "vocabulary"),
    ({"target": 1, "vocabulary": [5, 10_000]}, "vocabulary"),
    ({"target": 1, "vocabulary": np.array([], dtype=np.int64)}, "vocabulary"),
    ({"target": 1, "init_token": "zzz"}, "init_token"),
    ({"target": 1, "init_token": "good", "vocabulary": None}, "none"),
    ({"target": 1, "held_out_texts": []}, "held_out_texts"),
])
def test_search_validates_its_inputs(untrained: TextModel, kwargs: dict[str, object],
                                     parameter: str) -> None:
    texts = ["the bank was slow", "my card is late"]
    if parameter == "none":      # "good" is allowed unless blacklisted: this one runs
        vocab = trigger_vocabulary(untrained, exclude_words=["good"])
        with pytest.raises(InvalidInputError) as err:
            search_trigger(untrained, texts, **{**kwargs, "vocabulary": vocab})  # type: ignore[arg-type]
        assert err.value.parameter == "init_token"
        return
    with pytest.raises(InvalidInputError) as err:
        search_trigger(untrained, texts, **kwargs)  # type: ignore[arg-type]
    assert err.value.parameter == parameter
    if parameter == "target":
        assert isinstance(err.value, InvalidTargetError)


@pytest.mark.parametrize("texts", [[], "the bank", ["ok", ""], ["ok", 3]])
def test_search_rejects_bad_texts(untrained: TextModel, texts: object) -> None:
    with pytest.raises(InvalidInputError) as err:
        search_trigger(untrained, texts, target=1)  # type: ignore[arg-type]
    assert err.value.parameter == "texts"


@pytest.mark.parametrize(("kwargs", "parameter"), [
    ({"trigger_ids": []}, "trigger_ids"),
    ({"trigger_ids": [10_000]}, "trigger_ids"),
    ({"trigger_ids": [-1]}, "trigger_ids"),
    ({"n_random": 5}, "n_random"),
    ({"n_boot": 10}, "n_boot"),
    ({"confidence": 1.5}, "confidence"),
    ({"held_out_texts": []}, "held_out_texts"),
    ({"target": 7}, "target"),
])
def test_evaluate_validates_its_inputs(untrained: TextModel, kwargs: dict[str, object],
                                       parameter: str) -> None:
    args: dict[str, object] = {"trigger_ids": [5, 5], "held_out_texts": ["the bank"],
                               "target": 1, **kwargs}
    with pytest.raises(InvalidInputError) as err:
        evaluate_trigger(untrained, **args)  # type: ignore[arg-type]
    assert err.value.parameter == parameter


def test_other_boundaries(untrained: TextModel, folder: Path) -> None:
    with pytest.raises(InvalidInputError) as err:
        trigger_vocabulary(untrained, exclude_words="good")
    assert err.value.parameter == "exclude_words"
    with pytest.raises(InvalidInputError):
        trigger_vocabulary(untrained, exclude_words=[1])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError) as err:
        trigger_vocabulary(untrained, allow_subwords="yes")  # type: ignore[arg-type]
    assert err.value.parameter == "allow_subwords"
    with pytest.raises(UnsupportedModelError):
        trigger_vocabulary(untrained.module)  # type: ignore[arg-type]
    lm = TextModel(llama_lm(untrained.tokenizer), untrained.tokenizer, "causal_lm")
    with pytest.raises(InvalidTargetError):
        search_trigger(lm, ["the bank"], target=1)
    unevaluated = search_trigger(untrained, ["the bank was slow"], target=1, iterations=1,
                                 n_candidates=2, beam=1)
    with pytest.raises(InvalidInputError) as err:
        trigger_table(unevaluated)
    assert err.value.parameter == "results"
    with pytest.raises(InvalidInputError):
        trigger_table([])
