"""Activation patching on SmolLM2-135M: sites batched into one forward against one forward
per site (the way TransformerLens's ``get_act_patch_resid_pre`` and ROME's causal trace
run).

An indirect-object pair of equal token length ("..., John gave a drink to" -> " Mary"
against "..., Mary gave a drink to" -> " John"); the ``resid_pre`` map over every layer and
every position, denoising, metric ``logit(Mary) - logit(John)`` at the last token. Both
sides run in this process, alternating after a warm-up; the script prints the medians,
their ratio, and the largest difference between the two score maps.

    .venv/bin/python benchmarks/bench_patching.py [--quick] [--tiny] [--threads N]

``--quick`` maps the first three layers and times one run of each side; ``--tiny`` runs on
a random 4-layer Llama built here (no SmolLM2 needed).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import alternate, parse, versions
from xai_sandbox.text.model import TextModel
from xai_sandbox.text.patching import SiteScores, grid_sites, patch_sites

CLEAN = "Then Mary and John went to the park. John gave a ball to"
CORRUPT = "Then Mary and John went to the park. Mary gave a ball to"


def tiny_llama() -> tuple[TextModel, str, str, bool]:
    """A random 4-layer Llama over a word-level vocabulary (a smoke run without weights)."""
    from transformers import BertTokenizerFast, LlamaConfig, LlamaForCausalLM

    words = sorted({w.strip(".,").lower() for w in (CLEAN + " " + CORRUPT).split()})
    folder = Path(tempfile.mkdtemp(prefix="bench-patching-"))
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]",
                                                 "[MASK]", ".", ",", *words]) + "\n")
    tok = BertTokenizerFast.from_pretrained(str(folder), do_lower_case=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=tok.vocab_size, hidden_size=64, intermediate_size=128,
                             num_hidden_layers=4, num_attention_heads=4,
                             num_key_value_heads=4, max_position_embeddings=64,
                             initializer_range=0.3, attn_implementation="eager",
                             pad_token_id=tok.pad_token_id, bos_token_id=tok.cls_token_id,
                             eos_token_id=tok.sep_token_id)
        module = LlamaForCausalLM(config).eval()
    model = TextModel(module, tok, "causal_lm", model_id="tiny-llama")
    return model, "mary", "john", False         # no [CLS] ... [SEP] around the prompt


def smollm2_pair() -> tuple[TextModel, str, str, bool]:
    from xai_sandbox.text.catalog import smollm2

    return smollm2(), " Mary", " John", True


def main() -> None:
    args = parse(__doc__.splitlines()[0], [
        ("--tiny", {"action": "store_true", "help": "a random 4-layer Llama, no SmolLM2"}),
        ("--batch-size", {"type": int, "default": 32, "help": "sites per forward"})])
    model, target, foil, specials = tiny_llama() if args.tiny else smollm2_pair()
    blocks = model.blocks
    encoded = model.encode(CLEAN, add_special_tokens=specials)
    n_tokens = int(encoded.input_ids.shape[1])
    layers = 3 if args.quick else blocks.n_layers
    repeats = 1 if args.quick else 3
    sites = [s for s in grid_sites("resid_pre", blocks.n_layers, n_tokens, blocks.n_heads)
             if s.layer < layers]
    print(versions())
    print(f"threads {torch.get_num_threads()}, {model.model_id}: {blocks.n_layers} layers, "
          f"{n_tokens} tokens; resid_pre over {layers} layers x {n_tokens} positions = "
          f"{len(sites)} sites; medians of {repeats} alternating runs\n")

    def run(batch_size: int | None, some: list[Any] = sites) -> SiteScores:
        return patch_sites(model, CLEAN, CORRUPT, some, target=target, foil=foil,
                           batch_size=batch_size, add_special_tokens=specials)

    name_batched = f"batched ({args.batch_size} sites a forward)"
    name_single = "one forward per site"
    warm = sites[:min(len(sites), args.batch_size)]
    out = alternate({name_batched: lambda: run(args.batch_size), name_single: lambda: run(None)},
                    repeats, {name_batched: lambda: run(args.batch_size, warm),
                              name_single: lambda: run(None, warm[:4])})
    t_b, batched = out[name_batched]
    t_s, single = out[name_single]
    gap = batched.m_clean - batched.m_corr
    diff = float(np.max(np.abs(batched.scores - single.scores)))
    print(f"m_clean {batched.m_clean:.3f}, m_corr {batched.m_corr:.3f} "
          f"(logit({target.strip()}) - logit({foil.strip()}))")
    print(f"  {name_single:<30} {t_s:9.2f} s   {single.n_forwards:4d} forwards")
    print(f"  {name_batched:<30} {t_b:9.2f} s   {batched.n_forwards:4d} forwards")
    print(f"  ratio one-per-site / batched: {t_s / t_b:.2f}x")
    print(f"  max |diff| between the score maps: {diff:.2e} "
          f"({diff * abs(gap):.2e} logits)")
    scores = batched.scores.reshape(layers, n_tokens)
    tokens = encoded.tokens(model)
    print("\nresid_pre recovery (denoising): the best position of each layer")
    for layer in range(layers):
        best = int(np.argmax(scores[layer]))
        print(f"  layer {layer:2d}: position {best:2d} {tokens[best]!r:>10} "
              f"{scores[layer, best]:6.3f}   (final position {scores[layer, -1]:6.3f})")


if __name__ == "__main__":
    main()
