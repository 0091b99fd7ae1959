"""One contract over every registered text method, as tests/explainers/test_contract.py
is over the array methods: one verb, Explanation with provenance, typed errors for bad or
unknown arguments, determinism under a seed. Tiny random models keep it to seconds."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest

import tiny_selfexplain as ts
from helpers import make_mlp
from tiny import bert_classifier, keyword_data, llama_lm, tokenizer
from xai_sandbox.errors import InvalidInputError, UnknownMethodError, UnsupportedModelError
from xai_sandbox.explainers import EXPLAINERS, Explanation, explain, get_explainer
from xai_sandbox.explainers.base import OUTPUT_SPACES, REGISTRY
from xai_sandbox.explainers.explanation import TextDetail
from xai_sandbox.models import register
from xai_sandbox.text.methods import TEXT_METHODS
from xai_sandbox.text.model import TextModel
from xai_sandbox.text.sae import TopKSAE

TEXTS = ["the bank loan was slow", "my zorp card was late again"]
RICH = {"linear_probe": "probe_report", "activation_patching": "patching",
        "universal_trigger": "trigger", "self_explanation": "self_explanation"}
SAMPLES = ["linear_probe", "self_explanation", "universal_trigger"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TextModel]:
    tok = tokenizer(tmp_path_factory.mktemp("contract-tok"))
    classifier = TextModel(bert_classifier(tok, seed=3).eval(), tok, "classifier",
                           class_names=("absent", "present"), model_id="tiny-bert")
    lm = TextModel(llama_lm(tok, seed=4), tok, "causal_lm", model_id="tiny-llama")
    return {"classifier": classifier, "lm": lm}


def _case(method: str, models: dict[str, TextModel]) -> tuple[TextModel, Any, Any,
                                                              dict[str, Any]]:
    """The model, inputs, target and parameters the method runs on (small and fast)."""
    clf, lm = models["classifier"], models["lm"]
    ig = {"n_steps": 8, "tolerance": 0.5}
    if method == "text_integrated_gradients":
        return clf, TEXTS, 1, ig
    if method in ("text_gradient_x_input", "text_occlusion"):
        return clf, TEXTS, 1, {}
    if method == "generation_integrated_gradients":
        return lm, "the bank loan was", "slow", {**ig, "max_steps": 32}
    if method == "raw_attention":
        return clf, TEXTS, None, {"layer": 1}
    if method == "attention_rollout":
        return lm, TEXTS, None, {}
    if method == "linear_probe":
        texts, labels = keyword_data(40, seed=5)
        return clf, texts, None, {"labels": labels, "n_bootstrap": 20, "cs": (1.0,)}
    if method == "activation_patching":
        return lm, "the zorp loan was", "slow", {
            "corrupted": "the bank loan was", "foil": "fast", "sites": ("resid_pre",)}
    if method == "universal_trigger":
        return clf, TEXTS, "present", {"length": 1, "n_candidates": 3, "beam": 1,
                                       "iterations": 1}
    if method == "self_explanation":
        return clf, TEXTS[1], None, {"labels": ["absent", "present"],
                                     "answer": ts.keyword_explainer(clf),
                                     "n_permutations": 50, **ig}
    if method == "sae_features":
        return clf, TEXTS, 1, {"sae": TopKSAE(32, 16, 4, random_state=0), "layer": 0}
    raise AssertionError(f"no contract case for the text method {method!r}")


def _explain(method: str, models: dict[str, TextModel], **extra: Any) -> Explanation:
    model, inputs, target, params = _case(method, models)
    return explain(model, inputs, method=method, target=target, **{**params, **extra})


METHODS = sorted(TEXT_METHODS)


def test_every_text_method_has_a_case_and_shares_the_one_registry() -> None:
    assert len(METHODS) == 11
    assert set(REGISTRY) == set(EXPLAINERS) | set(TEXT_METHODS)
    assert not set(EXPLAINERS) & set(TEXT_METHODS)
    with pytest.raises(UnknownMethodError, match=r"method: must be one of .*'attention_rollout'"
                                                 r".*'integrated_gradients'"):
        get_explainer("atention_rollout")


@pytest.mark.parametrize("method", METHODS)
def test_output_and_provenance(method: str, models: dict[str, TextModel]) -> None:
    model = _case(method, models)[0]
    e = _explain(method, models, random_state=0)
    assert isinstance(e, Explanation) and e.method == method
    assert e.values.shape[0] >= 1 and np.isfinite(e.values).all()
    assert not e.values.flags.writeable
    assert e.output_space in OUTPUT_SPACES
    assert e.prediction.shape[0] == e.target.shape[0]
    assert e.model == {"model_id": model.model_id, "version": model.version,
                       "fingerprint": model.fingerprint()}
    assert "torch" in e.library_versions and "transformers" in e.library_versions
    assert e.wall_time_s >= 0 and e.seed == 0
    if method in RICH:
        assert isinstance(e.text, TextDetail) and e.text.kind == RICH[method]
        assert e.text.result and not hasattr(e.text.result, "__setitem__")
    else:
        assert e.text is None


@pytest.mark.parametrize("method", METHODS)
def test_json_round_trip_is_exact(method: str, models: dict[str, TextModel]) -> None:
    e = _explain(method, models, random_state=0)
    back = Explanation.from_json(e.to_json())
    assert back.to_json() == e.to_json()
    np.testing.assert_array_equal(back.values, e.values)
    assert back.text == e.text
    assert ("text" in e.to_dict()) == (method in RICH)
    with pytest.raises(TypeError, match="never pickled"):
        pickle.dumps(e)


@pytest.mark.parametrize("method", METHODS)
def test_deterministic_given_random_state(method: str, models: dict[str, TextModel]) -> None:
    a = _explain(method, models, random_state=7)
    b = _explain(method, models, random_state=7)
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.prediction, b.prediction)
    if a.text is not None and b.text is not None:
        drop = {"wall_time_s", "parameters"}
        assert ({k: v for k, v in a.text.result.items() if k not in drop}
                == {k: v for k, v in b.text.result.items() if k not in drop})


@pytest.mark.parametrize("method", METHODS)
def test_the_seed_is_recorded_and_changes_nothing_where_nothing_samples(
        method: str, models: dict[str, TextModel]) -> None:
    a = _explain(method, models, random_state=1)
    b = _explain(method, models, random_state=2)
    assert (a.seed, b.seed) == (1, 2)
    if not get_explainer(method, **_case(method, models)[3]).stochastic():
        np.testing.assert_array_equal(a.values, b.values)


def test_which_text_methods_sample(models: dict[str, TextModel]) -> None:
    assert sorted(m for m in METHODS
                  if get_explainer(m, **_case(m, models)[3]).stochastic()) == SAMPLES


@pytest.mark.parametrize("method", METHODS)
def test_an_unknown_parameter_is_refused_by_name(method: str,
                                                 models: dict[str, TextModel]) -> None:
    with pytest.raises(InvalidInputError, match=f"no_such_option: {method} does not take "
                                                "this parameter") as info:
        _explain(method, models, no_such_option=1)
    assert info.value.parameter == "no_such_option" and info.value.value == 1


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("argument", "value"), [
    ("baselines", np.zeros((1, 4))), ("background", np.zeros((2, 4))),
    ("feature_names", ["a", "b"]), ("groups", {"g": ["a"]}), ("group_features", True)])
def test_an_argument_of_explain_it_does_not_use_is_refused(
        method: str, argument: str, value: Any, models: dict[str, TextModel]) -> None:
    with pytest.raises(InvalidInputError, match=f"^{argument}: {method} does not use "
                                                f"{argument}") as info:
        _explain(method, models, **{argument: value})
    assert info.value.parameter == argument


@pytest.mark.parametrize("method", sorted(m for m in METHODS
                                          if "target" not in TEXT_METHODS[m].reads))
def test_a_target_is_refused_where_none_is_explained(method: str,
                                                     models: dict[str, TextModel]) -> None:
    model, inputs, _, params = _case(method, models)
    with pytest.raises(InvalidInputError, match=f"^target: {method} does not use target"):
        explain(model, inputs, method=method, target=1, **params)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("inputs", [42, [], [""], None])
def test_bad_inputs_are_typed_errors(method: str, inputs: Any,
                                     models: dict[str, TextModel]) -> None:
    model, _, target, params = _case(method, models)
    with pytest.raises(InvalidInputError):
        explain(model, inputs, method=method, target=target, **params)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("random_state", [-1, 1.5, True, "0"])
def test_a_bad_random_state_is_a_typed_error(method: str, random_state: Any,
                                             models: dict[str, TextModel]) -> None:
    with pytest.raises(InvalidInputError, match=r"^random_state: "):
        _explain(method, models, random_state=random_state)


@pytest.mark.parametrize("method", METHODS)
def test_a_text_method_refuses_an_array_model(method: str,
                                              models: dict[str, TextModel]) -> None:
    _, _, target, params = _case(method, models)
    mlp = register(make_mlp(), model_id="mlp", version="1", class_names=list("abc"),
                   sample_shape=(6,))
    with pytest.raises(UnsupportedModelError, match=f"model: {method} explains a TextModel"):
        explain(mlp, np.zeros((1, 6), dtype=np.float32), method=method, target=target,
                **params)


@pytest.mark.parametrize(("method", "model_kind"), [
    ("text_integrated_gradients", "lm"), ("text_occlusion", "lm"),
    ("generation_integrated_gradients", "classifier")])
def test_a_method_refuses_the_other_kind_of_text_model(
        method: str, model_kind: str, models: dict[str, TextModel]) -> None:
    _, inputs, _, params = _case(method, models)
    with pytest.raises(UnsupportedModelError, match=f"model: {method} explains a"):
        explain(models[model_kind], inputs, method=method, **params)


def test_required_parameters_and_targets_are_named(models: dict[str, TextModel]) -> None:
    clf = models["classifier"]
    with pytest.raises(InvalidInputError, match="corrupted: is required by "
                                                "activation_patching"):
        explain(clf, TEXTS[0], method="activation_patching", target=1, foil=0)
    with pytest.raises(InvalidInputError, match="target: is required by universal_trigger"):
        explain(clf, TEXTS, method="universal_trigger", length=1)
    with pytest.raises(InvalidInputError, match="labels: is required by linear_probe"):
        explain(clf, TEXTS, method="linear_probe")


@pytest.mark.parametrize(("method", "params", "named"), [
    ("generation_integrated_gradients", {"max_new_tokens": 4}, "max_new_tokens"),
    ("universal_trigger", {"n_random": 30}, "n_random"),
    ("self_explanation", {"decoding": "greedy"}, "decoding"),
])
def test_a_parameter_this_run_would_not_use_is_refused(
        method: str, params: dict[str, Any], named: str, models: dict[str, TextModel]) -> None:
    with pytest.raises(InvalidInputError, match=f"^{named}: ") as info:
        _explain(method, models, **params)
    assert info.value.parameter == named


def test_the_verb_gives_what_the_function_gives(models: dict[str, TextModel]) -> None:
    from xai_sandbox.text.attention import attention_rollout
    from xai_sandbox.text.patching import patch

    lm = models["lm"]
    direct = attention_rollout(lm, TEXTS)
    via = explain(lm, TEXTS, method="attention_rollout")
    np.testing.assert_array_equal(direct.values, via.values)
    assert direct.method == via.method == "attention_rollout"
    result = patch(lm, "the zorp loan was", "the bank loan was", target="slow", foil="fast",
                   sites=("resid_pre",))
    e = _explain("activation_patching", models)
    np.testing.assert_array_equal(e.values[0], result.scores["resid_pre"])
    assert e.text is not None and e.text.result["m_clean"] == result.m_clean


def test_two_seeded_runs_in_threads_equal_the_runs_in_turn(
        models: dict[str, TextModel]) -> None:
    """Randomness is local: the sampling methods draw from their own generators, so two
    seeded runs at once give what they give one after the other."""
    from concurrent.futures import ThreadPoolExecutor

    jobs = [("linear_probe", 3), ("universal_trigger", 4), ("linear_probe", 5),
            ("self_explanation", 6)]

    def run(job: tuple[str, int]) -> Explanation:
        return _explain(job[0], models, random_state=job[1])

    alone = [run(job) for job in jobs]
    with ThreadPoolExecutor(max_workers=2) as pool:
        together = list(pool.map(run, jobs))
    for a, b in zip(alone, together, strict=True):
        np.testing.assert_array_equal(a.values, b.values)
        assert a.seed == b.seed and a.parameters.get("tokens") == b.parameters.get("tokens")
        if a.text is not None and b.text is not None:
            assert a.text.result.get("task", a.text.result.get("tokens")) == \
                b.text.result.get("task", b.text.result.get("tokens"))
