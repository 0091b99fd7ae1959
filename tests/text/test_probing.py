"""Linear probes and their controls (LLM.md section 2.3): planted directions, chance on
shuffled labels, the document split, and a trained tiny encoder against its random-init
twin."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from tiny import bert_classifier, keyword_data, llama_lm, tokenizer
from tiny_probing import long_keyword_classifier, long_keyword_data
from xai_sandbox.errors import InvalidInputError
from xai_sandbox.explainers.explanation import Explanation
from xai_sandbox.reports.text_plots import probe_curve_png
from xai_sandbox.text.model import TextModel
from xai_sandbox.text.probing import (
    ProbeReport,
    control_task_labels,
    document_split,
    hidden_states,
    probe,
    probe_explanation,
    probe_layers,
    randomly_initialised,
)
from xai_sandbox.text.probing.fit import _weighted_auroc


def planted(n: int, d: int, alpha: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Isotropic Gaussian activations plus ``alpha * w`` with the label's sign.

    ``w`` has equal-magnitude coordinates (random signs): standardisation divides each
    coordinate by its total standard deviation, which the planted signal inflates by
    ``alpha**2 * w_j**2``; equal magnitudes make that the same factor for every coordinate,
    so the raw-unit direction is not tilted by it.
    """
    rng = np.random.default_rng(seed)
    w = rng.choice([-1.0, 1.0], size=d) / np.sqrt(d)
    y = rng.integers(0, 2, size=n)
    X = rng.normal(size=(n, d)) + np.outer(2 * y - 1, w) * alpha
    return X, y, w


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# ---------------------------------------------------------------------------- arrays
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_probe_recovers_a_planted_direction(seed: int) -> None:
    X, y, w = planted(1200, 32, 4.0, seed)
    result = probe(X, y, random_state=seed)
    assert cosine(result.direction[0], w) > 0.99
    assert result.accuracy >= 0.99 and result.auroc is not None and result.auroc > 0.999
    assert result.accuracy_ci[0] <= result.accuracy <= result.accuracy_ci[1]
    # The raw-unit probe scores rows as the fitted pipeline does.
    scores = X @ result.direction[0] + result.intercept[0]
    assert np.mean((scores > 0) == (y == 1)) >= 0.99


def test_probe_handles_several_classes() -> None:
    rng = np.random.default_rng(4)
    centres = 3.0 * rng.normal(size=(3, 16)) / 4.0
    y = np.array(["low", "mid", "high"])[np.arange(600) % 3]
    index = np.unique(y, return_inverse=True)[1]
    X = rng.normal(size=(600, 16)) + centres[index]
    result = probe(X, y, random_state=0)
    assert result.classes == ("high", "low", "mid")
    assert result.direction.shape == (3, 16) and result.auroc is None
    assert result.accuracy >= 0.9 and result.majority_accuracy == pytest.approx(1 / 3, abs=0.01)


def test_shuffled_labels_give_chance_within_the_interval() -> None:
    X, y, _ = planted(1200, 32, 4.0, 0)
    shuffled = np.random.default_rng(5).permutation(y)
    result = probe(X, shuffled, random_state=0)
    assert result.accuracy_ci[0] <= 0.5 <= result.accuracy_ci[1]
    assert result.auroc_ci is not None and result.auroc_ci[0] <= 0.5 <= result.auroc_ci[1]
    assert result.accuracy_ci[1] - result.accuracy_ci[0] < 0.15


def test_bootstrap_auroc_matches_sklearn_with_weights_and_ties() -> None:
    rng = np.random.default_rng(3)
    scores = np.round(rng.normal(size=60), 1)            # many ties
    positive = rng.random(60) < 0.4
    weights = rng.integers(0, 4, size=(5, 60)).astype(float)
    got = _weighted_auroc(scores, positive, weights)
    want = [roc_auc_score(positive, scores, sample_weight=row) for row in weights]
    np.testing.assert_allclose(got, want, atol=1e-12)
    only_positive = np.where(positive, 1.0, 0.0)[None, :]
    assert np.isnan(_weighted_auroc(scores, positive, only_positive))[0]


def document_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """100 documents of 6 rows; each document has a random label and its own random
    signature vector, so a probe can only score above chance by recognising documents."""
    rng = np.random.default_rng(seed)
    docs = np.repeat(np.arange(100), 6)
    doc_labels = rng.permutation(np.arange(100) % 2)
    signature = rng.normal(size=(100, 256))
    X = signature[docs] + 0.3 * rng.normal(size=(600, 256))
    return X, doc_labels[docs], docs


def test_document_split_keeps_every_document_on_one_side() -> None:
    X, y, docs = document_data()
    train, test = document_split(len(y), y, docs, test_size=0.3, random_state=4)
    assert not set(docs[train]) & set(docs[test])
    assert sorted(np.r_[train, test].tolist()) == list(range(len(y)))
    result = probe(X, y, docs, random_state=4)
    assert not set(docs[result.train_index]) & set(docs[result.test_index])
    assert 20 <= np.unique(docs[result.test_index]).size <= 40


def test_splitting_by_document_removes_the_leak_that_rows_give() -> None:
    X, y, docs = document_data()
    by_row = probe(X, y, random_state=0)            # a document's rows on both sides
    by_document = probe(X, y, docs, random_state=0)
    assert by_row.accuracy > 0.9                     # it recognises the documents
    assert by_document.accuracy_ci[0] <= 0.5 <= by_document.accuracy_ci[1]


# ---------------------------------------------------------------------------- text models
@pytest.fixture(scope="module")
def random_bert(tmp_path_factory: pytest.TempPathFactory) -> TextModel:
    tok = tokenizer(tmp_path_factory.mktemp("probe-vocab"))
    return TextModel(bert_classifier(tok, seed=1).eval(), tok, "classifier",
                     class_names=("a", "b"), model_id="tiny-random-bert")


@pytest.fixture(scope="module")
def random_llama(random_bert: TextModel) -> TextModel:
    return TextModel(llama_lm(random_bert.tokenizer, seed=2), random_bert.tokenizer,
                     "causal_lm", model_id="tiny-random-llama")


TEXTS = ["the bank was slow", "my loan rate is late again today", "fee",
         "our staff call with a form and a letter"]


@pytest.mark.parametrize("pool", ["cls", "last", "mean"])
@pytest.mark.parametrize("which", ["random_bert", "random_llama"])
def test_pooled_states_match_each_text_run_alone(pool: str, which: str,
                                                 request: pytest.FixtureRequest) -> None:
    model: TextModel = request.getfixturevalue(which)
    got = hidden_states(model, TEXTS, pool=pool, batch_size=3)   # padded, two batches
    n_layers = model.blocks.n_layers
    assert got.shape == (n_layers + 1, len(TEXTS), model.blocks.hidden_size)
    for row, text in enumerate(TEXTS):
        enc = model.encode(text)
        with torch.no_grad():
            states = model.forward(enc.input_ids, enc.attention_mask,
                                   output_hidden_states=True).hidden_states
        alone = torch.stack(states)[:, 0].numpy()                # (L+1, T, d)
        want = {"cls": alone[:, 0], "last": alone[:, -1], "mean": alone.mean(axis=1)}[pool]
        np.testing.assert_allclose(got[:, row], want, atol=2e-5)


def test_auto_pool_is_cls_for_encoders_and_last_token_for_decoders(
        random_bert: TextModel, random_llama: TextModel) -> None:
    for model, pool in ((random_bert, "cls"), (random_llama, "last")):
        np.testing.assert_array_equal(hidden_states(model, TEXTS),
                                      hidden_states(model, TEXTS, pool=pool))  # type: ignore[arg-type]


def test_randomly_initialised_copies_the_architecture_not_the_weights(
        random_bert: TextModel) -> None:
    before = torch.random.get_rng_state()
    fresh = randomly_initialised(random_bert, random_state=7)
    again = randomly_initialised(random_bert, random_state=7)
    other = randomly_initialised(random_bert, random_state=8)
    assert torch.equal(before, torch.random.get_rng_state())        # global seed untouched
    assert type(fresh.module) is type(random_bert.module) and not fresh.module.training
    assert fresh.module.config.to_dict() == random_bert.module.config.to_dict()
    mine = dict(random_bert.module.named_parameters())
    for name, value in fresh.module.named_parameters():
        assert value.shape == mine[name].shape
    weight = "bert.encoder.layer.0.attention.self.query.weight"
    fresh_w, again_w = dict(fresh.module.named_parameters())[weight], dict(
        again.module.named_parameters())[weight]
    assert torch.equal(fresh_w, again_w)
    assert not torch.equal(fresh_w, dict(other.module.named_parameters())[weight])
    assert not torch.equal(fresh_w, mine[weight])


def test_control_labels_are_fixed_per_first_content_word() -> None:
    texts = ["the bank was slow", "a bank is fast", "my loan was late", "loan again",
             "the staff call", "staff and form", "very quiet office", "office phone"] * 5
    labels = np.array([0, 1] * 20)
    control = control_task_labels(texts, labels, random_state=3)
    assert control.dtype == labels.dtype and set(control) <= {0, 1}
    first_words = ["bank", "bank", "loan", "loan", "staff", "staff", "office", "office"] * 5
    for word in set(first_words):
        assert len({control[i] for i, w in enumerate(first_words) if w == word}) == 1
    np.testing.assert_array_equal(control, control_task_labels(texts, labels,
                                                               random_state=3))
    seen = {tuple(control_task_labels(texts, labels, random_state=s)) for s in range(8)}
    assert len(seen) > 1                                      # the random function varies
    # Grouped: a document's rows share the label of its first row's first content word.
    groups = np.arange(40) // 2
    grouped = control_task_labels(texts, labels, groups, random_state=3)
    np.testing.assert_array_equal(grouped[0::2], grouped[1::2])
    # Drawn from the task's label distribution: a 95 %/5 % task gives mostly the majority.
    texts_many = [f"word{chr(97 + i % 26)}{chr(97 + i // 26)} x" for i in range(400)]
    skewed = np.array([0] * 380 + [1] * 20)
    share = np.mean(control_task_labels(texts_many, skewed, random_state=0) == 0)
    assert 0.88 <= share <= 0.99


@pytest.fixture(scope="module")
def trained_report(tmp_path_factory: pytest.TempPathFactory
                   ) -> tuple[TextModel, ProbeReport, np.ndarray]:
    model = long_keyword_classifier(tmp_path_factory.mktemp("probe-long"))
    texts, labels = long_keyword_data(360, seed=11)
    docs = np.arange(len(texts)) // 2                      # documents of two texts
    report = probe_layers(model, texts, labels, groups=docs, random_state=0)
    return model, report, docs


def test_trained_model_beats_its_random_init_twin_and_is_selective(
        trained_report: tuple[TextModel, ProbeReport, np.ndarray]) -> None:
    _, report, docs = trained_report
    assert not set(docs[report.train_index]) & set(docs[report.test_index])
    for results in (report.task, report.random_init, report.control):
        assert results is not None
        for r in results:
            np.testing.assert_array_equal(r.test_index, report.test_index)
    accuracy = report.accuracies
    random_init = report.random_init_accuracies
    selectivity = report.selectivity
    assert random_init is not None and selectivity is not None
    # The embedding output at CLS is the same vector for every text: majority class.
    assert accuracy[0] == pytest.approx(report.majority_accuracy)
    best = report.best_layer
    assert best >= 1 and accuracy[best] >= 0.95
    gap = accuracy - random_init
    assert gap.max() >= 0.2                                 # trained >> random init
    assert report.task[best].accuracy_ci[0] > random_init[best]
    assert selectivity[best] > 0.2


def test_report_renders_as_json_png_and_explanation(
        trained_report: tuple[TextModel, ProbeReport, np.ndarray]) -> None:
    model, report, _ = trained_report
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["best_layer"] == report.best_layer
    assert len(data["task"]) == len(data["random_init"]) == len(data["control"]) == 3
    assert data["selectivity"] == pytest.approx(list(report.selectivity))  # type: ignore[arg-type]
    png = probe_curve_png(report)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    explanation = probe_explanation(report, model)
    assert explanation.method == "linear_probe"
    assert explanation.values.shape == (1, report.n_layers)
    np.testing.assert_allclose(explanation.values[0], report.accuracies)
    assert explanation.feature_names == ("embeddings", "layer 1", "layer 2")
    assert explanation.explained_output()[0] == pytest.approx(report.accuracies.max())
    again = Explanation.from_json(explanation.to_json())
    np.testing.assert_array_equal(again.values, explanation.values)


def test_probe_layers_without_controls_on_a_causal_lm(random_llama: TextModel) -> None:
    texts, labels = keyword_data(80, seed=2)
    report = probe_layers(random_llama, texts, labels, controls=False, n_bootstrap=200)
    assert report.pool == "last" and report.n_layers == 3
    assert report.random_init is None and report.control is None
    assert report.selectivity is None and report.to_dict()["control"] is None
    assert probe_curve_png(report).startswith(b"\x89PNG")


# ---------------------------------------------------------------------------- bad inputs
def test_bad_inputs_name_the_parameter(random_bert: TextModel, random_llama: TextModel,
                                       tmp_path: Path) -> None:
    texts, labels = keyword_data(20, seed=0)
    X = np.random.default_rng(0).normal(size=(20, 4))
    with_nan = X.copy()
    with_nan[3, 1] = np.nan
    cases = [
        ("labels", lambda: probe_layers(random_bert, texts, labels[:-1])),
        ("labels", lambda: probe_layers(random_bert, texts, np.zeros(20, int))),
        ("pool", lambda: probe_layers(random_bert, texts, labels, pool="max")),  # type: ignore[arg-type]
        ("pool", lambda: hidden_states(random_bert, texts, pool="first")),  # type: ignore[arg-type]
        ("groups", lambda: probe_layers(random_bert, texts, labels, groups=[0] * 19)),
        ("groups", lambda: probe_layers(random_bert, texts, labels, groups=[0] * 20)),
        ("test_size", lambda: probe_layers(random_bert, texts, labels, test_size=1.5)),
        ("batch_size", lambda: hidden_states(random_bert, texts, batch_size=0)),
        ("texts", lambda: hidden_states(random_bert, "one text")),  # type: ignore[arg-type]
        ("texts", lambda: probe_layers(random_bert, [*texts[:-1], ""], labels)),
        ("control_labels", lambda: probe_layers(random_bert, texts, labels,
                                                control_labels=labels[:5])),
        ("random_model", lambda: probe_layers(random_bert, texts, labels,
                                              random_model=random_llama)),
        ("random_state", lambda: probe(X, labels, random_state=-1)),
        ("X", lambda: probe(with_nan, labels)),
        ("y", lambda: probe(X, np.linspace(0, 1, 20))),
        ("y", lambda: probe(X, labels[:10])),
    ]
    for parameter, call in cases:
        with pytest.raises(InvalidInputError) as info:
            call()
        assert info.value.parameter == parameter, (parameter, str(info.value))
