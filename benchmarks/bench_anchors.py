"""Anchor alignment and alert evaluation against the explanation they follow.

Per decision: the explanation alone, then the explanation + alignment onto the anchors +
the consecutive-hit streak update that decides whether an alert is due. Target: the second
costs under 5 % more than the first. German credit (TreeSHAP on LightGBM, Integrated
Gradients on the MLP, the shipped anchor library) and EfficientNet-Lite0 (Grad-CAM++ with
two box anchors on the cat photo).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import alternate, parse, versions
from xai_sandbox.demos.credit import credit_models
from xai_sandbox.explainers import explain
from xai_sandbox.monitor.alerts import AnchorStreaks
from xai_sandbox.semantics.anchors import align, load_anchors


def main() -> None:
    args = parse(__doc__.splitlines()[0])
    repeats = 5 if args.quick else 40
    credit = credit_models()
    lib = load_anchors("german-credit")
    streaks = AnchorStreaks(5)
    row = credit.data.rows[1]
    x = credit.data.X[1:2]
    print(f"Anchor alignment + alert evaluation vs the explanation alone ({versions()}), "
          f"median of {repeats}")
    cases = [("German credit LightGBM, TreeSHAP", credit.lightgbm, x, "tree_shap", row, lib),
             ("German credit MLP, Integrated Gradients", credit.mlp, x, "integrated_gradients",
              row, lib)]
    if not args.quick:
        from xai_sandbox.demos.images import efficientnet_lite0, load_photo, preprocess

        image_lib = load_anchors({"version": "photo/1", "anchors": [
            {"id": "face", "label": {"en": "Face", "zh": "面部"},
             "covers": {"boxes": [[60, 20, 170, 130]]}},
            {"id": "background", "label": {"en": "Background", "zh": "背景"},
             "covers": {"boxes": [[0, 150, 224, 224]]}}]})
        cases.append(("EfficientNet-Lite0, Grad-CAM++", efficientnet_lite0(),
                      preprocess(load_photo("chelsea")), "grad_cam_pp", None, image_lib))
    for label, model, inputs, method, features, anchors in cases:
        target = "bad" if features is not None else None

        def alone(model=model, inputs=inputs, method=method, target=target):
            return explain(model, inputs, method=method, target=target)

        def watched(model=model, inputs=inputs, method=method, target=target,
                    features=features, anchors=anchors):
            e = explain(model, inputs, method=method, target=target)
            matches = align(e, anchors, row=features)
            streaks.update(model.model_id, "d", [m.to_dict() for m in matches])
            return matches

        timed = alternate({"alone": alone, "watched": watched}, repeats)
        t0, t1 = timed["alone"][0], timed["watched"][0]
        print(f"  {label:<42} explanation {t0 * 1e3:8.2f} ms, with anchors and alerts "
              f"{t1 * 1e3:8.2f} ms: +{(t1 / t0 - 1):.1%}")


if __name__ == "__main__":
    main()
