"""What the default quality block costs beside the explanation it judges, and our
deletion curve against Quantus's PixelFlipping on EfficientNet-Lite0.

Part 1: for each model and method, the median time of the explanation and of
``assess()`` on the same row, alternating, and their ratio (target: at most 1.0, the block
costs no more than the explanation again). Sampling methods also pay a second seed for
their stability: shown separately.

Part 2: the deletion curve of one heatmap on a real photo, 8 steps of 12.5% of the pixels,
ours (all steps in one batch) against Quantus's PixelFlipping (one forward per step), with
the largest difference between the two curves.

    .venv/bin/python benchmarks/bench_quality.py [--quick]
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import warnings

import numpy as np
import torch

from _common import alternate, parse, versions
from xai_sandbox.demos.credit import credit_models
from xai_sandbox.demos.images import PHOTOS, efficientnet_lite0, load_photo, preprocess
from xai_sandbox.explainers import explain
from xai_sandbox.quality.assess import assess
from xai_sandbox.quality.faithfulness import curves, explained_output_fn, players_of


def block_cost(label: str, model, x, method: str, repeats: int, seed_rerun: bool = False,
               **params) -> None:  # type: ignore[no-untyped-def]
    e = explain(model, x, method=method, random_state=1, **params)

    def explanation():  # type: ignore[no-untyped-def]
        return explain(model, x, method=method, random_state=1, **params)

    def block():  # type: ignore[no-untyped-def]
        reruns = [explain(model, x, method=method, random_state=2, **params)] \
            if seed_rerun else []
        return assess(model, x, [e], reruns=reruns)

    timed = alternate({"explanation": explanation, "quality block": block}, repeats)
    t_e, t_q = timed["explanation"][0], timed["quality block"][0]
    curves_ = timed["quality block"][1]["methods"][method]["curves"]
    print(f"{label:<44} {t_e * 1e3:9.2f} ms {t_q * 1e3:9.2f} ms {t_q / t_e:7.2f}x   "
          f"{curves_['players']} {curves_['kind']}, {len(curves_['fractions'])} points")


def main() -> None:
    args = parse(__doc__.splitlines()[0])
    repeats = 3 if args.quick else 9
    print(versions(), f"quantus {importlib.metadata.version('quantus')}")
    print(f"threads {torch.get_num_threads()}, medians of {repeats} alternating runs\n")
    print(f"{'model / method':<44} {'explanation':>12} {'quality block':>13} {'ratio':>8}")
    credit = credit_models()
    row = credit.data.X[credit.test[:1]]
    block_cost("German credit LightGBM / tree_shap", credit.lightgbm, row, "tree_shap",
               repeats)
    block_cost("German credit MLP / integrated_gradients", credit.mlp, row,
               "integrated_gradients", repeats)
    block_cost("German credit MLP / gradient_x_input", credit.mlp, row, "gradient_x_input",
               repeats)
    block_cost("German credit MLP / kernel_shap", credit.mlp, row, "kernel_shap", repeats)
    block_cost("German credit MLP / kernel_shap + 2nd seed", credit.mlp, row,
               "kernel_shap", repeats, seed_rerun=True)
    net = efficientnet_lite0()
    photo = preprocess(load_photo(PHOTOS[0]))
    block_cost("EfficientNet-Lite0 / grad_cam_pp", net, photo, "grad_cam_pp", repeats)
    block_cost("EfficientNet-Lite0 / grad_cam", net, photo, "grad_cam", repeats)
    if not args.quick:
        block_cost("EfficientNet-Lite0 / integrated_gradients", net, photo,
                   "integrated_gradients", 3)

    import quantus

    e = explain(net, photo, method="grad_cam_pp")
    values = np.random.default_rng(0).random((1, 1, 224, 224))   # distinct: one order
    e = dataclasses.replace(e, values=values)
    fn = explained_output_fn(net.adapter, e)
    baseline = np.full_like(photo[0], photo.min())
    players = players_of(e, photo[0].shape)
    fractions = [k / 8 for k in range(1, 8)]
    # Quantus ranks each channel of a pixel apart (the map is broadcast over channels,
    # equal values sort together): 3 of its steps of 1/24 move 1/8 of the pixels.
    metric = quantus.PixelFlipping(features_in_step=224 * 224 // 8,
                                   perturb_baseline="black", disable_warnings=True,
                                   display_progressbar=False)
    target = np.array([int(e.target[0])])

    def theirs():  # type: ignore[no-untyped-def]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return metric(model=net.adapter.module, x_batch=photo, y_batch=target,
                          a_batch=values, device="cpu", softmax=False, channel_first=True)

    def ours():  # type: ignore[no-untyped-def]
        return curves(fn, photo[0], baseline, players, fractions=fractions)

    timed = alternate({"ours": ours, "quantus": theirs}, max(3, repeats // 3))
    c = timed["ours"][1]
    raw = c.baseline_output + c.deletion * (c.output - c.baseline_output)
    per_pixel_eighth = np.asarray(timed["quantus"][1][0])[2::3]
    gap = float(np.max(np.abs(raw[1:] - per_pixel_eighth)))
    t_o, t_q = timed["ours"][0], timed["quantus"][0]
    print("\nDeletion curve, EfficientNet-Lite0, 8 steps of 12.5% of the pixels:")
    print(f"  ours (one batch)            {t_o * 1e3:8.1f} ms")
    print(f"  Quantus PixelFlipping       {t_q * 1e3:8.1f} ms   ({t_q / t_o:.2f}x ours; 24 "
          "steps of 1/24 of the channel values)")
    print(f"  largest difference between the curves: {gap:.2e} (logit units)")


if __name__ == "__main__":
    main()
