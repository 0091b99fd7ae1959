"""Activation patching: the planted key position of a copy task trained in-test, exact 0 and
1 at the ends of the scale, the batched engine against one forward per site, hooks that
never outlive a call, and the result types."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch

from tiny import FILLER, llama_lm, tokenizer
from tiny_patching import KEY_POSITION, LENGTH, copy_lm, keyword_lm, random_bert, random_gpt2
from xai_sandbox.errors import InvalidInputError, InvalidTargetError
from xai_sandbox.explainers.explanation import Explanation
from xai_sandbox.reports.text_plots import patching_map_png
from xai_sandbox.text.model import TextModel
from xai_sandbox.text.patching import (
    COMPONENTS,
    Site,
    patch,
    patch_one_by_one,
    patch_sites,
)

# The copy task's pair: only the key word differs (symmetric token replacement).
CLEAN = "my bank was very slow today again"
CORRUPT = "my loan was very slow today again"
FINAL = LENGTH - 1
IRRELEVANT = [p for p in range(LENGTH) if p not in (KEY_POSITION, FINAL)]
# A pair for the random models (with [CLS] and [SEP] around it).
TEXT = "my bank was very slow today"
SWAPPED = "my loan was very slow today"


@pytest.fixture(scope="module")
def tok(tmp_path_factory):  # type: ignore[no-untyped-def]
    return tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def copier(tmp_path_factory) -> TextModel:  # type: ignore[no-untyped-def]
    return copy_lm(tmp_path_factory.mktemp("copy"))


@pytest.fixture(scope="module")
def models(tok, copier):  # type: ignore[no-untyped-def]
    """Name -> (model, target, foil, keyword arguments for patch)."""
    bank, loan = tok.convert_tokens_to_ids(["bank", "loan"])
    return {
        "llama-copy": (copier, "bank", "loan", {"add_special_tokens": False}),
        "bert": (random_bert(tok, seed=1), "yes", "no", {}),
        "gpt2": (random_gpt2(tok, seed=5), bank, loan, {}),
        "keyword-blocks": (keyword_lm(tok, seed=1), bank, loan, {}),
    }


def _pair(name: str) -> tuple[str, str]:
    return (CLEAN, CORRUPT) if name == "llama-copy" else (TEXT, SWAPPED)


def _all_hooks(model: TextModel) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks)
               for m in model.module.modules())


# ---------------------------------------------------------------------------- planted
def test_the_copy_model_learned_its_task(copier) -> None:
    words = torch.as_tensor(copier.tokenizer.convert_tokens_to_ids(FILLER))
    ids = words[torch.randint(len(words), (300, LENGTH),
                              generator=torch.Generator().manual_seed(123))]
    with torch.no_grad():
        guess = copier.module(input_ids=ids).logits[:, -1].argmax(-1)
    assert (guess == ids[:, KEY_POSITION]).float().mean() == 1.0


@pytest.mark.parametrize("mode", ["denoise", "noise"])
def test_recovery_sits_at_the_key_then_moves_to_the_final_position(copier, mode) -> None:
    r = patch(copier, CLEAN, CORRUPT, target="bank", foil="loan", mode=mode,
              sites=("resid_pre", "resid_post", "attn_out"), add_special_tokens=False)
    assert r.m_clean > 3 and r.m_corr < -3 and not r.degenerate
    pre, post, attn = r.scores["resid_pre"], r.scores["resid_post"], r.scores["attn_out"]
    # Early: the key position's residual stream carries the answer into both blocks.
    assert pre[0, KEY_POSITION] >= 0.8 and pre[1, KEY_POSITION] >= 0.8
    # Late: block 1's attention moves it to the final position, which then holds it all.
    assert attn[1, FINAL] >= 0.8 and post[1, FINAL] >= 0.8
    assert abs(post[1, FINAL] - 1) <= 1e-6
    # Before block 1 the final position has (almost) nothing yet.
    assert abs(pre[0, FINAL]) <= 0.05 and abs(pre[1, FINAL]) <= 0.05
    for scores in (pre, post, attn):
        assert np.abs(scores[:, IRRELEVANT]).max() <= 0.05


# ---------------------------------------------------------------------------- 0 and 1
@pytest.mark.parametrize("mode", ["denoise", "noise"])
@pytest.mark.parametrize("name", ["llama-copy", "bert"])
def test_identical_prompts_score_exactly_zero(models, name, mode) -> None:
    model, target, foil, kwargs = models[name]
    clean, _ = _pair(name)
    r = patch(model, clean, clean, target=target, foil=foil, sites=COMPONENTS, mode=mode,
              **kwargs)
    assert r.degenerate and r.m_clean == r.m_corr and r.n_forwards == 0
    assert set(r.scores) == set(COMPONENTS)
    assert all((v == 0).all() for v in r.scores.values())


@pytest.mark.parametrize("mode", ["denoise", "noise"])
@pytest.mark.parametrize("name", ["llama-copy", "bert", "gpt2", "keyword-blocks",
                                  "llama-copy float64", "bert float64"])
def test_patching_the_whole_residual_stream_gives_one(models, name, mode) -> None:
    name, _, precision = name.partition(" ")
    model, target, foil, kwargs = models[name]
    double = precision == "float64"
    if double:
        model = dataclasses.replace(model, module=copy.deepcopy(model.module).double())
    clean, corrupted = _pair(name)
    n_tokens = model.encode(clean, **kwargs).input_ids.shape[1]
    last = model.blocks.n_layers - 1
    # The classifier pools the [CLS] position; a causal LM answers at the last token.
    answer = 0 if model.kind == "classifier" else n_tokens - 1
    every = tuple(range(n_tokens))
    others = [p for p in every if p != answer]
    sites = [Site("resid_pre", 0, every), Site("resid_pre", last, every),
             Site("resid_post", last, (answer,)),
             *(Site("resid_post", last, (p,)) for p in others)]
    s = patch_sites(model, clean, corrupted, sites, target=target, foil=foil, mode=mode,
                    **kwargs)
    assert abs(s.m_clean - s.m_corr) > 0.1
    # Exact up to rounding: a batch of rows rounds float32 matrix products differently from
    # the single-row runs that give m_clean and m_corr (about 1e-6 logits here); in float64
    # the same checks hold to 1e-12.
    tolerance = 1e-12 if double else 1e-5
    np.testing.assert_allclose(s.scores[:3], 1.0, rtol=0, atol=tolerance)
    # After the last block only the answer position reaches the output.
    np.testing.assert_allclose(s.scores[3:], 0.0, rtol=0, atol=tolerance)


# ---------------------------------------------------------------------------- engines
@pytest.mark.parametrize(("name", "mode", "components"), [
    ("llama-copy", "denoise", COMPONENTS),
    ("llama-copy", "noise", ("resid_pre", "mlp_out", "head")),
    ("bert", "noise", ("resid_post", "mlp_out", "head")),
    ("gpt2", "denoise", ("resid_pre", "attn_out", "head")),
    ("keyword-blocks", "denoise", ("resid_pre", "resid_post", "mlp_out", "head")),
])
def test_batched_patching_equals_one_forward_per_site(models, name, mode, components
                                                      ) -> None:
    model, target, foil, kwargs = models[name]
    clean, corrupted = _pair(name)
    reference = patch_one_by_one(model, clean, corrupted, target=target, foil=foil,
                                 sites=components, mode=mode, **kwargs)
    gap = abs(reference.m_clean - reference.m_corr)
    n_sites = sum(v.size for v in reference.scores.values())
    assert reference.n_forwards == n_sites
    for batch_size in (5, 1000):
        batched = patch(model, clean, corrupted, target=target, foil=foil, sites=components,
                        mode=mode, batch_size=batch_size, **kwargs)
        assert batched.n_forwards == -(-n_sites // batch_size)
        for c in components:
            assert batched.scores[c].shape == reference.scores[c].shape
            # Equal to 1e-5 in logit units (the scores are these over the gap).
            assert np.abs(batched.scores[c] - reference.scores[c]).max() * gap <= 1e-5
    if name == "llama-copy":            # a large gap: the scores themselves agree too
        for c in components:
            assert np.abs(batched.scores[c] - reference.scores[c]).max() <= 1e-5
    shapes = {"head": (model.blocks.n_layers, model.blocks.n_heads),
              "head_by_pos": (model.blocks.n_layers, model.blocks.n_heads,
                              len(reference.tokens))}
    for c in components:
        assert reference.scores[c].shape == shapes.get(
            c, (model.blocks.n_layers, len(reference.tokens)))


def test_sites_over_several_positions_batch_like_one_by_one(copier) -> None:
    sites = [Site("resid_pre", 1, (KEY_POSITION, FINAL)), Site("mlp_out", 0, (0, 1, 2)),
             Site("head", 1, (FINAL,), 2), Site("head_by_pos", 0, (KEY_POSITION,), 1),
             Site("attn_out", 1, tuple(range(LENGTH)))]
    kwargs = {"target": "bank", "foil": "loan", "add_special_tokens": False}
    single = patch_sites(copier, CLEAN, CORRUPT, sites, batch_size=None, **kwargs)
    batched = patch_sites(copier, CLEAN, CORRUPT, sites, batch_size=4, **kwargs)
    assert single.n_forwards == len(sites) and batched.n_forwards == 2
    np.testing.assert_allclose(batched.patched, single.patched, rtol=0, atol=1e-5)
    np.testing.assert_allclose(batched.scores, single.scores, rtol=0, atol=1e-5)
    # The whole attention output of block 1 carries what its heads move to the end.
    assert batched.scores[-1] >= 0.8


def test_no_hook_survives_an_exception_mid_run(copier) -> None:
    calls = []

    def fail_on_the_first_patched_run(module, args, output):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 3:                 # after the clean and the corrupted caching runs
            assert _all_hooks(copier) > 1   # the patching hooks are in place now
            raise RuntimeError("boom")

    handle = copier.module.lm_head.register_forward_hook(fail_on_the_first_patched_run)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            patch(copier, CLEAN, CORRUPT, target="bank", foil="loan", sites=COMPONENTS,
                  add_special_tokens=False)
        assert _all_hooks(copier) == 1      # only the test's own hook is left
    finally:
        handle.remove()
    assert _all_hooks(copier) == 0
    patch(copier, CLEAN, CORRUPT, target="bank", foil="loan", sites="resid_pre",
          add_special_tokens=False)
    assert _all_hooks(copier) == 0


# ---------------------------------------------------------------------------- refusals
def test_prompts_of_different_lengths_are_refused(copier) -> None:
    with pytest.raises(InvalidInputError, match="as many tokens") as err:
        patch(copier, CLEAN, "my loan was slow", target="bank", foil="loan",
              add_special_tokens=False)
    assert err.value.parameter == "corrupted"


def test_a_metric_gap_below_min_gap_is_refused(copier) -> None:
    with pytest.raises(InvalidInputError, match="min_gap") as err:
        patch(copier, CLEAN, CORRUPT, target="bank", foil="loan", min_gap=1e3,
              add_special_tokens=False)
    assert err.value.parameter == "corrupted"


def test_bad_arguments_are_refused_with_their_names(copier, tok) -> None:
    def call(**kwargs):  # type: ignore[no-untyped-def]
        args = {"target": "bank", "foil": "loan", "add_special_tokens": False, **kwargs}
        return patch(copier, CLEAN, CORRUPT, **args)

    cases = [({"mode": "both"}, "mode"), ({"sites": ("resid",)}, "sites"),
             ({"sites": ()}, "sites"), ({"batch_size": 0}, "batch_size"),
             ({"target": 10_000}, "target"), ({"foil": "bank"}, "foil"),
             ({"target": "bank loan"}, "target"), ({"target": True}, "target")]
    for kwargs, parameter in cases:
        with pytest.raises(InvalidInputError) as err:
            call(**kwargs)
        assert err.value.parameter == parameter, kwargs
    with pytest.raises(InvalidTargetError):
        call(foil=-1)
    for site in (Site("resid_pre", 2, (0,)), Site("resid_pre", 0, (LENGTH,)),
                 Site("head", 0, (0,)), Site("attn_out", 0, (0,), head=1),
                 Site("head", 0, (0,), head=4)):
        with pytest.raises(InvalidInputError) as err:
            patch_sites(copier, CLEAN, CORRUPT, [site], target="bank", foil="loan",
                        add_special_tokens=False)
        assert err.value.parameter == "sites"
    bert = random_bert(tok)
    with pytest.raises(InvalidTargetError):
        patch(bert, TEXT, SWAPPED, target="maybe", foil="no")
    assert _all_hooks(copier) == 0


# ---------------------------------------------------------------------------- results
def test_results_serialise_render_and_become_explanations(copier) -> None:
    r = patch(copier, CLEAN, CORRUPT, target="bank", foil="loan",
              sites=("resid_pre", "head", "head_by_pos"), mode="noise",
              add_special_tokens=False, batch_size=16)
    assert r.tokens == tuple(CLEAN.split()) and r.corrupted_tokens == tuple(CORRUPT.split())
    assert (r.target_name, r.foil_name) == ("bank", "loan")
    blob = json.loads(json.dumps(r.to_dict()))
    assert blob["scores"]["resid_pre"] == r.scores["resid_pre"].tolist()
    assert blob["score"] == "(m_clean - m_patched) / (m_clean - m_corr)"
    with pytest.raises(ValueError, match="read-only"):
        r.scores["resid_pre"][0, 0] = 5.0   # read-only
    e = r.as_explanation(copier)
    assert e.method == "activation_patching" and e.output_space == "contrast"
    assert e.values.shape == (1, 2, LENGTH)
    np.testing.assert_array_equal(e.values[0], r.scores["resid_pre"])
    assert e.explained_output()[0] == r.m_clean and e.expected_value[0] == r.m_clean
    assert e.parameters["tokens"] == [CLEAN.split()] and e.parameters["mode"] == "noise"
    again = Explanation.from_json(e.to_json())
    np.testing.assert_array_equal(again.values, e.values)
    assert r.as_explanation(copier, "head").values.shape == (1, 2, 4)
    for component in ("resid_pre", "head", "head_by_pos"):
        png = patching_map_png(r, component)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    with pytest.raises(InvalidInputError):
        patching_map_png(r, "mlp_out")
    with pytest.raises(InvalidInputError):
        r.as_explanation(copier, "attn_out")


def test_an_untrained_llama_runs_every_component(tok) -> None:
    model = TextModel(llama_lm(tok, seed=3), tok, "causal_lm")
    r = patch(model, TEXT, SWAPPED, target="bank", foil="loan", sites=COMPONENTS,
              min_gap=1e-6)
    assert all(np.isfinite(v).all() for v in r.scores.values())
    # Only position 2 ("bank" / "loan") differs before block 0.
    assert np.abs(r.scores["resid_pre"][0, [0, 1, 3, 4, 5, 6, 7]]).max() <= 1e-3
    assert r.scores["resid_pre"][0, 2] == pytest.approx(1.0, abs=1e-3)


# ---------------------------------------------------------------------------- memory budget
def test_auto_batches_fit_the_memory_budget_and_equal_one_by_one(copier, monkeypatch
                                                                 ) -> None:
    kwargs = {"target": "bank", "foil": "loan", "add_special_tokens": False,
              "sites": ("resid_pre", "head")}
    reference = patch_one_by_one(copier, CLEAN, CORRUPT, **kwargs)
    n_sites = sum(v.size for v in reference.scores.values())
    roomy = patch(copier, CLEAN, CORRUPT, **kwargs)
    assert roomy.n_forwards == 1 and roomy.batch_size == n_sites
    forwards = []
    for megabytes in ("0.01", "0.3", "1", "3"):          # smaller budgets, more forwards
        monkeypatch.setenv("XAI_SANDBOX_CPU_MEMORY_BUDGET_MB", megabytes)
        tight = patch(copier, CLEAN, CORRUPT, **kwargs)
        assert tight.batch_size is not None
        assert tight.n_forwards == -(-n_sites // tight.batch_size)
        forwards.append(tight.n_forwards)
        for c in kwargs["sites"]:
            assert np.abs(tight.scores[c] - reference.scores[c]).max() <= 1e-6
    assert forwards == sorted(forwards, reverse=True)
    assert forwards[0] == n_sites       # a budget below one site still runs, one by one
    assert any(1 < f < n_sites for f in forwards)
    for c in kwargs["sites"]:
        assert np.abs(roomy.scores[c] - reference.scores[c]).max() <= 1e-6


def test_a_forward_out_of_memory_is_halved_until_it_fits(copier) -> None:
    refused: list[int] = []

    def oom_above_three(module, args, kwargs):  # type: ignore[no-untyped-def]
        ids = args[0] if args else kwargs["input_ids"]
        if ids.shape[0] > 3:
            refused.append(int(ids.shape[0]))
            raise torch.OutOfMemoryError(f"CUDA out of memory: {ids.shape[0]} rows")

    kwargs = {"target": "bank", "foil": "loan", "add_special_tokens": False,
              "sites": ("resid_post",)}
    reference = patch_one_by_one(copier, CLEAN, CORRUPT, **kwargs)
    handle = copier.module.register_forward_pre_hook(oom_above_three, with_kwargs=True)
    try:
        result = patch(copier, CLEAN, CORRUPT, batch_size=16, **kwargs)
    finally:
        handle.remove()
    n_sites = reference.scores["resid_post"].size
    assert refused == [n_sites, n_sites // 2]   # the pass that failed, halved, twice
    assert result.batch_size == n_sites // 4
    assert result.n_forwards == -(-n_sites // (n_sites // 4))
    np.testing.assert_allclose(result.scores["resid_post"], reference.scores["resid_post"],
                               rtol=0, atol=1e-6)
