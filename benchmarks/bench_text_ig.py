"""Token IG on SmolLM2-135M: ours (every target token in one batched IG call) against
Captum's ``LLMGradientAttribution`` (one IG call per target token), side by side.

Both: word embeddings, 50 Gauss-Legendre steps, prompt tokens replaced by the pad token in
the baseline, target log-probabilities with the earlier target tokens fed in. Prints the
median times, the ratio, the largest difference between the two attribution matrices
and each one's completeness error.

    .venv/bin/python benchmarks/bench_text_ig.py [--quick]
"""

from __future__ import annotations

import numpy as np

from _common import alternate, parse, versions
from xai_sandbox.text.attribution import generation_attributions
from xai_sandbox.text.catalog import smollm2

PROMPT = "Review: the staff were rude and the fees were hidden. Sentiment:"
TARGET = " negative, clearly unhappy"


def main() -> None:
    args = parse(__doc__.splitlines()[0])
    from captum.attr import LayerIntegratedGradients, LLMGradientAttribution, TextTokenInput

    lm = smollm2()
    tok = lm.tokenizer
    target = TARGET if not args.quick else " negative"
    n_target = len(tok(target, add_special_tokens=False)["input_ids"])
    repeats = 1 if args.quick else 3
    print(versions())
    print(f"SmolLM2-135M, prompt of {len(tok(PROMPT)['input_ids'])} tokens, {n_target} "
          f"target tokens, 50 steps, medians of {repeats} alternating runs\n")
    captum_attr = LLMGradientAttribution(LayerIntegratedGradients(lm.module, lm.embeddings()),
                                         tok)

    def ours():  # type: ignore[no-untyped-def]
        return generation_attributions(lm, PROMPT, target=target, n_steps=50, max_steps=50,
                                       internal_batch_size=64)

    def theirs():  # type: ignore[no-untyped-def]
        return captum_attr.attribute(TextTokenInput(PROMPT, tok, baselines=tok.pad_token_id),
                                     target=target, n_steps=50, internal_batch_size=64)

    timed = alternate({"ours": ours, "captum": theirs}, repeats)
    mine, ref = timed["ours"][1], timed["captum"][1]
    diff = float(np.max(np.abs(mine.values - ref.token_attr.numpy())))
    scale = float(np.max(np.abs(ref.token_attr.numpy())))
    t_o, t_c = timed["ours"][0], timed["captum"][0]
    print(f"ours (one batched IG call)          {t_o:7.2f} s")
    print(f"Captum LLMGradientAttribution      {t_c:7.2f} s   ({t_c / t_o:.2f}x ours)")
    print(f"largest difference between the matrices: {diff:.2e} (largest value {scale:.2e})")
    print(f"completeness error at {mine.parameters['n_steps']} steps: "
          f"{mine.completeness_error:.2%} (by default the steps are raised, x4 up to 800, "
          "until it is within 5%)")


if __name__ == "__main__":
    main()
