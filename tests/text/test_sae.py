"""Sparse features: the TopK SAE recovers a planted dictionary, splices into a classifier
without changing it, and its attributions are confirmed by ablation (LLM.md 2.7)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tiny import KEYWORD, keyword_classifier, keyword_data, llama_lm, tokenizer
from tiny_sae import recovery, synthetic_dictionary
from xai_sandbox.errors import InvalidInputError, InvalidTargetError, UnsupportedModelError
from xai_sandbox.explainers.explanation import Explanation
from xai_sandbox.text.model import TextModel
from xai_sandbox.text.sae import (
    PretrainedSAE,
    SAETrainResult,
    TopKSAE,
    ablate_features,
    collect_activations,
    feature_attribution,
    load_pretrained_sae,
    sae_site_from_config,
    splice_fidelity,
    spliced,
    train_sae,
)

LAYER = 0


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> TextModel:
    return keyword_classifier(tmp_path_factory.mktemp("sae-tok"))


@pytest.fixture(scope="module")
def trained(model: TextModel) -> SAETrainResult:
    texts, _ = keyword_data(300, seed=1)
    acts, _ = collect_activations(model, texts, layer=LAYER, site="resid_post")
    return train_sae(acts, n_features=64, k=4, steps=600, lr=3e-3, batch_size=512,
                     random_state=0)


@pytest.fixture(scope="module")
def positives() -> list[str]:
    texts, labels = keyword_data(80, seed=2)
    return [t for t, y in zip(texts, labels, strict=True) if y == 1]


def _hooks(model: TextModel) -> set[tuple[str, str, int]]:
    """Every forward hook on the model (Hugging Face keeps its own output-capturing hooks
    once hidden states have been asked for, so compare before and after)."""
    return {(name, kind, key) for name, m in model.module.named_modules()
            for kind, hooks in (("post", m._forward_hooks), ("pre", m._forward_pre_hooks))
            for key in hooks}


# ------------------------------------------------------------------ the trainer
def test_topk_sae_recovers_a_planted_dictionary() -> None:
    # 64 unit directions in 32 dimensions (superposition), 3 active per row.
    x, dictionary = synthetic_dictionary(8192, 32, 64, 3, seed=0)
    result = train_sae(x, n_features=128, k=3, steps=600, lr=3e-3, batch_size=512,
                       random_state=0)
    recovered, best = recovery(dictionary, result.sae.W_dec.detach().numpy())
    print(f"recovered {recovered:.3f} (min cosine {best.min():.3f}), explained variance "
          f"{result.explained_variance:.3f}, L0 {result.l0:.2f}, dead {result.dead_fraction:.3f}")
    assert recovered >= 0.8
    assert result.explained_variance > 0.85
    assert result.l0 <= 3.0
    norms = result.sae.W_dec.detach().norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    summary = result.to_dict()
    json.dumps(summary)
    assert summary["n_features"] == 128 and len(summary["losses"]) == 600


def test_training_is_deterministic_and_leaves_no_global_state() -> None:
    x, _ = synthetic_dictionary(1024, 16, 24, 2, seed=3)
    threads = torch.get_num_threads()
    rng_state = torch.random.get_rng_state()
    a = train_sae(x, n_features=32, k=2, steps=60, batch_size=128, random_state=5,
                  resample_dead_every=20)
    b = train_sae(x, n_features=32, k=2, steps=60, batch_size=128, random_state=5,
                  resample_dead_every=20)
    c = train_sae(x, n_features=32, k=2, steps=60, batch_size=128, random_state=6,
                  resample_dead_every=20)
    assert torch.equal(a.sae.W_dec, b.sae.W_dec) and torch.equal(a.sae.b_enc, b.sae.b_enc)
    assert a.losses == b.losses
    assert not torch.equal(a.sae.W_dec, c.sae.W_dec)
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.random.get_rng_state(), rng_state)


def test_dead_features_are_resampled() -> None:
    # Data on a 2-D plane: most of 64 features never reach the top-1 of any row.
    rng = np.random.default_rng(0)
    plane = rng.normal(size=(2, 16))
    x = (rng.normal(size=(2048, 2)) @ plane).astype(np.float32)
    without = train_sae(x, n_features=64, k=1, steps=200, batch_size=256,
                        resample_dead_every=0)
    with_ = train_sae(x, n_features=64, k=1, steps=200, batch_size=256,
                      resample_dead_every=40)
    print(f"dead without {without.dead_fraction:.3f}, with {with_.dead_fraction:.3f}, "
          f"resampled {with_.n_resampled}")
    assert without.n_resampled == 0 and with_.n_resampled > 0
    assert with_.dead_fraction < without.dead_fraction


def test_encoder_keeps_k_nonnegative_features() -> None:
    sae = TopKSAE(8, 20, 3, random_state=1).requires_grad_(False)
    f = sae.encode(torch.randn(50, 8, generator=torch.Generator().manual_seed(0)))
    assert f.shape == (50, 20)
    assert int((f > 0).sum(1).max()) <= 3 and float(f.min()) >= 0.0
    assert torch.allclose(sae(torch.zeros(1, 8)), sae.decode(sae.encode(torch.zeros(1, 8))))


def test_trainer_rejects_bad_inputs() -> None:
    x = np.zeros((10, 4), dtype=np.float32)
    with pytest.raises(InvalidInputError, match="k"):
        train_sae(x, n_features=4, k=5)
    with pytest.raises(InvalidInputError, match="activations"):
        train_sae(np.zeros(10), n_features=4, k=1)
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(InvalidInputError, match="finite"):
        train_sae(bad, n_features=4, k=1)
    with pytest.raises(InvalidInputError, match="lr"):
        train_sae(x, n_features=4, k=1, lr=0.0)


# ------------------------------------------------------------------ activations
def test_sites_match_hugging_face_hidden_states(model: TextModel) -> None:
    texts = ["the bank was slow", "zorp my card again today"]
    enc = model.encode(texts)
    with torch.no_grad():
        hidden = model.forward(enc.input_ids, enc.attention_mask,
                               output_hidden_states=True).hidden_states
    before = _hooks(model)
    mask = enc.attention_mask.bool().numpy()
    for layer in (0, 1):
        pre, where = collect_activations(model, texts, layer=layer, site="resid_pre")
        post, _ = collect_activations(model, texts, layer=layer, site="resid_post")
        assert np.allclose(pre, hidden[layer].numpy()[mask], atol=1e-6)
        assert np.allclose(post, hidden[layer + 1].numpy()[mask], atol=1e-6)
    assert where.tolist() == np.argwhere(mask).tolist()
    cls, at = collect_activations(model, texts, layer=1, pool="cls")
    assert np.allclose(cls, hidden[2][:, 0].numpy(), atol=1e-6) and at[:, 1].tolist() == [0, 0]
    _, at = collect_activations(model, texts, layer=1, pool="last")
    assert at[:, 1].tolist() == (mask.sum(1) - 1).tolist()
    plain, at = collect_activations(model, texts, layer=1, include_special=False)
    assert len(plain) == int(mask.sum()) - 4       # CLS and SEP of each text left out
    mean, _ = collect_activations(model, texts, layer=1, pool="mean", include_special=False)
    first = at[:, 0] == 0
    assert np.allclose(mean[0], plain[first].mean(0), atol=1e-6)
    assert _hooks(model) == before


# ------------------------------------------------------------------ splicing
def test_splice_with_error_term_is_exact_and_reconstruction_is_close(
        model: TextModel, trained: SAETrainResult) -> None:
    texts, _ = keyword_data(80, seed=3)
    before = _hooks(model)
    enc = model.encode(texts)
    with torch.no_grad():
        clean = model.logits(enc.input_ids, enc.attention_mask)
        with spliced(model, trained.sae, LAYER, attention_mask=enc.attention_mask) as record:
            exact = model.logits(enc.input_ids, enc.attention_mask)
    assert record.calls == 1 and record.features is not None
    assert record.features.requires_grad
    assert torch.equal(clean.argmax(1), exact.argmax(1))
    assert float((clean - exact).abs().max()) < 1e-5
    fidelity = splice_fidelity(model, trained.sae, texts, layer=LAYER)
    print(f"SAE: EV {trained.explained_variance:.3f}, L0 {trained.l0:.1f}; {fidelity}")
    assert fidelity.agreement_spliced == 1.0
    assert fidelity.max_abs_logit_diff_spliced < 1e-5
    assert fidelity.agreement_reconstruction >= 0.95
    assert fidelity.kl_reconstruction < 0.05
    assert fidelity.kl_zero > 10 * fidelity.kl_reconstruction
    assert fidelity.explained_variance > 0.8
    json.dumps(fidelity.to_dict())
    assert _hooks(model) == before


def test_no_hook_survives_an_exception(model: TextModel, trained: SAETrainResult) -> None:
    enc = model.encode(["the bank was slow"])
    before = _hooks(model)

    def fail_inside() -> None:
        with spliced(model, trained.sae, LAYER):
            model.logits(enc.input_ids, enc.attention_mask)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail_inside()
    assert _hooks(model) == before
    wrong = torch.ones(3, 3, dtype=torch.bool)       # fails inside the hook, mid-forward
    with pytest.raises(InvalidInputError, match="positions"), spliced(
            model, trained.sae, LAYER, site="resid_pre", positions=wrong):
        model.logits(enc.input_ids, enc.attention_mask)
    assert _hooks(model) == before


def test_splice_is_exact_on_a_causal_lm_at_every_site(tmp_path: Path) -> None:
    tok = tokenizer(tmp_path)
    lm = TextModel(llama_lm(tok), tok, "causal_lm", model_id="tiny-llama")
    sae = TopKSAE(32, 48, 4, random_state=2)        # untrained: the error term carries it
    before = _hooks(lm)
    enc = lm.encode(["the bank was slow today", "my card"])
    with torch.no_grad():
        clean = lm.logits(enc.input_ids, enc.attention_mask)
        for site in ("resid_pre", "resid_post", "attn_out", "mlp_out"):
            with spliced(lm, sae, 1, site, attention_mask=enc.attention_mask):  # type: ignore[arg-type]
                exact = lm.logits(enc.input_ids, enc.attention_mask)
            assert float((clean - exact).abs().max()) < 1e-5, site
    explanation = feature_attribution(lm, sae, ["the bank was slow today"], layer=1)
    assert explanation.values.shape == (1, 48)
    assert explanation.target[0] == int(clean[0, -1].argmax())
    assert _hooks(lm) == before


# ------------------------------------------------------------------ attribution
def _keyword_share(explanation: Explanation) -> float:
    """Rows whose word token (CLS and SEP aside) with the largest attribution is the
    planted keyword."""
    hits = [toks[1:-1][int(np.argmax(row[1:-1]))] == KEYWORD
            for toks, row in zip(explanation.parameters["tokens"],
                                 explanation.parameters["token_attribution"], strict=True)]
    return float(np.mean(hits))


def _matched_mass_controls(model: TextModel, sae: TopKSAE, texts: list[str],
                           top: list[list[int]], rng: np.random.Generator) -> list[list[int]]:
    """Per row, random other active features until their activation mass reaches that of
    the row's top features."""
    enc = model.encode(texts)
    with torch.no_grad(), spliced(model, sae, LAYER,
                                  attention_mask=enc.attention_mask) as record:
        model.logits(enc.input_ids, enc.attention_mask)
    assert record.features is not None
    mass = (record.features.detach() * enc.attention_mask[..., None]).sum(1).numpy()
    rows = []
    for row, picked in enumerate(top):
        need, total, chosen = mass[row, picked].sum(), 0.0, []
        for j in rng.permutation(sae.n_features):
            if total >= need:
                break
            if j not in picked and mass[row, j] > 0:
                chosen.append(int(j))
                total += mass[row, j]
        rows.append(chosen)
    return rows


def test_attribution_points_at_the_keyword_and_ablation_confirms_it(
        model: TextModel, trained: SAETrainResult, positives: list[str]) -> None:
    sae = trained.sae
    before = _hooks(model)
    rng = np.random.default_rng(0)
    for steps in (1, 8):          # gradient x activation, then integrated gradients
        explanation = feature_attribution(model, sae, positives, layer=LAYER, target=1,
                                          steps=steps)
        assert explanation.method == "sae_features"
        assert explanation.values.shape == (len(positives), sae.n_features)
        assert explanation.target.tolist() == [1] * len(positives)
        json.dumps(explanation.to_dict())
        tokens = explanation.parameters["tokens"]
        assert len(explanation.parameters["token_features"][0]) == len(tokens[0])
        share = _keyword_share(explanation)
        top = [list(map(int, np.argsort(-row)[:3])) for row in explanation.values]
        hit = ablate_features(model, sae, positives, top, layer=LAYER, target=1)
        random_changes = []
        for _ in range(3):
            control = ablate_features(model, sae, positives,
                                      _matched_mass_controls(model, sae, positives, top, rng),
                                      layer=LAYER, target=1)
            assert control.mass.mean() >= 0.95 * hit.mass.mean()   # matched (or more) mass
            random_changes.append(float(np.abs(control.change).mean()))
        print(f"steps={steps}: keyword is the top word in {share:.2f} of rows; top-3 ablation "
              f"{hit.mean_change:.3f} (flips {np.mean(hit.ablated_class == 0):.2f}, mass "
              f"{hit.mass.mean():.1f}), random matched-mass |change| "
              f"{np.round(random_changes, 3).tolist()}")
        assert hit.mean_change < 0
        assert float(np.abs(hit.change).mean()) > 2 * max(random_changes)
        json.dumps(hit.to_dict())
    # The tiny model saturates (a tanh pooler), so the planted keyword shows up only in the
    # path-integrated attribution; gradient x activation at alpha=1 misses it in ~half the
    # rows, which is the reason steps > 1 exists.
    assert share >= 0.9
    assert _hooks(model) == before


def test_integrated_feature_attribution_is_complete(model: TextModel) -> None:
    sae = TopKSAE(32, 64, 8, random_state=0)
    texts, _ = keyword_data(8, seed=4)
    coarse = feature_attribution(model, sae, texts, layer=1, steps=4)
    fine = feature_attribution(model, sae, texts, layer=1, steps=16)
    gap = fine.explained_output() - fine.expected_value
    print(f"completeness error: 4 steps {coarse.completeness_error:.2e}, 16 steps "
          f"{fine.completeness_error:.2e}; gap {np.abs(gap).mean():.3f}")
    assert np.abs(gap).min() > 0.1          # zeroing the features does change the logit
    assert fine.completeness_error is not None and coarse.completeness_error is not None
    assert fine.completeness_error < 1e-3
    assert fine.completeness_error < coarse.completeness_error
    np.testing.assert_allclose(fine.values.sum(1), gap, atol=1e-3)


def test_attribution_and_ablation_reject_bad_inputs(
        model: TextModel, trained: SAETrainResult) -> None:
    sae = trained.sae
    with pytest.raises(InvalidTargetError):
        feature_attribution(model, sae, ["the bank"], layer=LAYER, target=5)
    with pytest.raises(InvalidInputError, match="layer"):
        feature_attribution(model, sae, ["the bank"], layer=7)
    with pytest.raises(InvalidInputError, match="site"):
        collect_activations(model, ["the bank"], layer=0, site="resid_mid")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="sae"):
        feature_attribution(model, TopKSAE(16, 8, 2), ["the bank"], layer=LAYER)
    with pytest.raises(InvalidInputError, match="features"):
        ablate_features(model, sae, ["the bank"], [999], layer=LAYER)
    with pytest.raises(InvalidInputError, match="features"):
        ablate_features(model, sae, ["the bank"], [], layer=LAYER)


# ------------------------------------------------------------------ SAELens
GPT2_RES_JB = {"d_in": 768, "d_sae": 24576, "hook_name": "blocks.8.hook_resid_pre",
               "context_size": 128, "prepend_bos": True, "model_name": "gpt2-small",
               "normalize_activations": "none", "apply_b_dec_to_input": True,
               "dtype": "float32"}


def test_sae_lens_config_maps_to_sites(model: TextModel) -> None:
    site = sae_site_from_config(GPT2_RES_JB)
    assert site.collect_kwargs() == {"layer": 8, "site": "resid_pre"}
    assert site.center and site.prepend_bos and site.context_size == 128
    llama = {**GPT2_RES_JB, "hook_name": "blocks.3.hook_mlp_out",
             "model_name": "meta-llama/Llama-3.1-8B"}
    assert not sae_site_from_config(llama).center
    nested = {"d_in": 32, "metadata": {"hook_name": "blocks.1.hook_resid_post",
                                       "model_name": "whatever",
                                       "model_from_pretrained_kwargs": {}}}
    assert sae_site_from_config(nested, model=model).center      # BERT has LayerNorm
    off = {**GPT2_RES_JB, "model_from_pretrained_kwargs": {"center_writing_weights": False}}
    assert not sae_site_from_config(off).center
    with pytest.raises(UnsupportedModelError, match="hook_name"):
        sae_site_from_config({**GPT2_RES_JB, "hook_name": "blocks.8.attn.hook_z"})
    with pytest.raises(UnsupportedModelError, match="normalisation"):
        sae_site_from_config({**GPT2_RES_JB, "normalize_activations": "layer_norm"})
    json.dumps(site.to_dict())


def test_wrapped_sae_centres_its_input_and_splices_exactly(model: TextModel) -> None:
    inner = TopKSAE(32, 40, 3, random_state=4)
    site = sae_site_from_config({**GPT2_RES_JB, "hook_name": "blocks.1.hook_resid_pre"},
                                model=model)
    wrapped = PretrainedSAE(inner, site, d_in=32, n_features=40)
    x = torch.randn(5, 32, generator=torch.Generator().manual_seed(1)) + 3.0
    assert torch.allclose(wrapped.encode(x), inner.encode(x - x.mean(-1, keepdim=True)))
    enc = model.encode(["zorp the loan", "the fee was late"])
    with torch.no_grad():
        clean = model.logits(enc.input_ids, enc.attention_mask)
        with spliced(model, wrapped, **site.collect_kwargs(),
                     attention_mask=enc.attention_mask):
            exact = model.logits(enc.input_ids, enc.attention_mask)
    assert float((clean - exact).abs().max()) < 1e-5


def test_missing_sae_lens_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sae_lens", None)     # import fails as if not installed
    with pytest.raises(InvalidInputError, match=r"xai-sandbox\[sae\]"):
        load_pretrained_sae("gpt2-small-res-jb", "blocks.8.hook_resid_pre")
