"""Integrated Gradients on EfficientNet-Lite0: ours vs Captum at its best batch size.

Captum runs 50 Gauss-Legendre steps at internal_batch_size None, 4, 8, 16 and 25; its
fastest is the peer. Ours runs the same 50 steps with the chunk size it picks itself, and
the adaptive rule, which stops when the completeness error is at most 1%. Passes are
forward+backward evaluations of one image; errors are |sum(attr) - (f(x) - f(b))| /
|f(x) - f(b)|. The baseline is the all-zero input (mid-grey after normalisation).
"""

from __future__ import annotations

import numpy as np
import torch
from captum.attr import IntegratedGradients as CaptumIG

from _common import alternate, parse, versions
from xai_sandbox.demos.images import PHOTOS, efficientnet_lite0, load_photo, preprocess
from xai_sandbox.explainers import explain
from xai_sandbox.explainers.integrated import auto_chunk


def main() -> None:
    args = parse(__doc__ or "")
    model = efficientnet_lite0()
    module = model.adapter.module
    photos = PHOTOS[:1] if args.quick else PHOTOS
    repeats = 1 if args.quick else 3
    captum = CaptumIG(module)
    print(f"IG on EfficientNet-Lite0, 3x224x224 ({versions()}, {torch.get_num_threads()} "
          f"threads); our chunk size: {auto_chunk(3 * 224 * 224, 50)}")
    rows = []
    for name in photos:
        x = preprocess(load_photo(name))
        xt = torch.as_tensor(x)
        target = int(np.argmax(model.adapter.predict(x)[0]))
        sizes = (None, 8) if args.quick else (None, 4, 8, 16, 25)
        fns = {f"captum/{s}": (lambda s=s: captum.attribute(
            xt, target=target, n_steps=50, internal_batch_size=s,
            return_convergence_delta=True)) for s in sizes}
        fns["ours/50"] = lambda: explain(model, x, method="integrated_gradients",
                                         target=target, n_steps=50)
        fns["ours/auto"] = lambda: explain(model, x, method="integrated_gradients",
                                           target=target, n_steps="auto", tolerance=0.01)
        runs = alternate(fns, repeats=repeats)
        best = min((k for k in runs if k.startswith("captum")), key=lambda k: runs[k][0])
        t_captum, (attr, delta) = runs[best]
        t_fixed, fixed = runs["ours/50"]
        t_auto, auto = runs["ours/auto"]
        diff = float(np.abs(fixed.values - attr.detach().numpy()).max())
        gap = abs(float(fixed.explained_output()[0] - fixed.expected_value[0]))
        passes = auto.parameters["passes_per_row"][0]
        rows.append((name, t_captum, best, t_fixed, t_auto, abs(float(delta[0])) / gap,
                     auto.completeness_error, passes, diff))
        print(f"{name:>10}: Captum best ({best.split('/')[1]}) {t_captum:6.2f} s | ours 50 steps "
              f"{t_fixed:6.2f} s ({t_captum / t_fixed:4.2f}x, max |diff| {diff:.1e}) | "
              f"50-step error {abs(float(delta[0])) / gap:6.2%} | adaptive {passes:3d} passes "
              f"{t_auto:6.2f} s, error {auto.completeness_error:6.2%}")
    med = np.median([r[7] for r in rows])
    print(f"median photo: adaptive {med:.0f} passes vs 50 fixed; 50-step ratio Captum/ours "
          f"{np.median([r[1] / r[3] for r in rows]):.2f}x; adaptive vs Captum "
          f"{np.median([r[1] / r[4] for r in rows]):.2f}x")


if __name__ == "__main__":
    main()
