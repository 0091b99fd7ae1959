"""The main demo job: explain a rejected German credit applicant and a cat photo."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress

from xai_sandbox.datasets.german_credit import ATTRIBUTION
from xai_sandbox.explainers.base import explain
from xai_sandbox.explainers.explanation import Explanation
from xai_sandbox.reports.tables import factor_rows, factor_table

__all__ = ["DemoOutput", "run_credit_demo", "run_demo", "run_image_demo"]


@dataclass(frozen=True)
class DemoOutput:
    credit_json: Path
    overlays: tuple[Path, ...]


def run_credit_demo(out_dir: Path, console: Console, progress: Progress) -> Path:
    from xai_sandbox.demos.credit import credit_models

    task = progress.add_task("German credit: training or loading models", total=4)
    models = credit_models()
    progress.advance(task)
    data, mlp, gbm = models.data, models.mlp, models.lightgbm
    X_test = data.X[models.test]
    bad = mlp.class_index("bad")
    rejected = [i for i, p in zip(models.test, mlp.adapter.predict(X_test), strict=True)
                if int(np.argmax(p)) == bad and int(np.argmax(gbm.adapter.predict(
                    data.X[i : i + 1])[0])) == bad]
    index = int(rejected[0])
    x = data.X[index : index + 1]
    progress.update(task, description="German credit: Integrated Gradients")
    ig = explain(mlp, x, method="integrated_gradients", target="bad")
    progress.advance(task)
    progress.update(task, description="German credit: exact Shapley values (2^20 coalitions)")
    shapley = explain(mlp, x, method="exact_shapley", target="bad")
    progress.advance(task)
    progress.update(task, description="German credit: TreeSHAP on LightGBM")
    tree = explain(gbm, x, method="tree_shap", target="bad")
    progress.advance(task)

    explanations: dict[str, Explanation] = {"IG (MLP)": ig, "Shapley (MLP)": shapley,
                                            "TreeSHAP (LightGBM)": tree}
    row = data.rows[index]
    ranked = factor_rows(data.schema, row, explanations, rank_by="Shapley (MLP)")
    p_bad = float(mlp.probabilities(x)[0, bad])
    console.print(factor_table(
        ranked, list(explanations),
        title=f"Why applicant #{index} was rejected (MLP: P(bad) = {p_bad:.2f}); "
              f"attributions to the 'bad' logit / margin, against a typical applicant"))
    console.print(f"held-out accuracy: MLP {models.accuracy['german-credit-mlp']:.3f}, "
                  f"LightGBM {models.accuracy['german-credit-lightgbm']:.3f}; completeness "
                  f"error IG {ig.completeness_error:.2e}, Shapley "
                  f"{shapley.completeness_error:.1e}, TreeSHAP {tree.completeness_error:.1e}")
    document = {
        "data": {"name": "German credit (Statlog)", "attribution": ATTRIBUTION,
                 "sha256": data.sha256},
        "applicant": {"row": index, "features": row,
                      "label": ["good", "bad"][int(data.y[index])]},
        "decision": {"model": mlp.identity, "p_bad": p_bad, "outcome": "rejected"},
        "factors": ranked,
        "explanations": {label: e.to_dict() for label, e in explanations.items()},
    }
    path = out_dir / "german_credit_rejected.json"
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def run_image_demo(out_dir: Path, console: Console, progress: Progress) -> tuple[Path, ...]:
    from xai_sandbox.demos.images import efficientnet_lite0, load_photo, predict_top, preprocess
    from xai_sandbox.reports.heatmap import save_overlay

    task = progress.add_task("EfficientNet-Lite0: loading", total=3)
    model = efficientnet_lite0()
    pixels = load_photo("chelsea")
    x = preprocess(pixels)
    top = predict_top(model, x)
    target = model.class_names.index(top[0][0])
    runs: list[tuple[str, str, dict[str, Any]]] = [
        ("grad_cam", "Grad-CAM", {}), ("grad_cam_pp", "Grad-CAM++", {}),
        ("integrated_gradients", "Integrated Gradients (adaptive)", {"n_steps": "auto"})]
    paths = []
    for method, label, params in runs:
        progress.update(task, description=f"EfficientNet-Lite0: {label}")
        e = explain(model, x, method=method, target=target, **params)
        extra = (f", {e.parameters['passes_per_row'][0]} passes, completeness error "
                 f"{e.completeness_error:.2%}") if method == "integrated_gradients" else ""
        title = f"{label}: '{top[0][0]}' (p = {top[0][1]:.2f}){extra}"
        paths.append(save_overlay(pixels, e, out_dir / f"chelsea_{method}.png", title=title))
        progress.advance(task)
        if method == "grad_cam_pp":
            paths.append(_bias_demo(pixels, e, out_dir, console))
    console.print(f"cat photo: top classes {', '.join(f'{n} {p:.2f}' for n, p in top)}")
    return tuple(paths)


def _bias_demo(pixels: np.ndarray, explanation: Explanation, out_dir: Path,
               console: Console) -> Path:
    """The Grad-CAM++ map weighted by anchor risk, the face region blurred for export."""
    from xai_sandbox.reports.bias import bias_heatmap
    from xai_sandbox.semantics.anchors import align, load_anchors

    library = load_anchors({"version": "demo-photo/1", "anchors": [
        {"id": "face", "label": {"en": "Face (biometric data)", "zh": "面部（生物识别数据）"},
         "covers": {"polygons": [[[70, 15], [165, 15], [185, 120], [115, 165], [50, 120]]]},
         "regulations": ["GDPR Art. 9(1) (biometric data)"], "protected": True,
         "risk": {"kind": "share", "at": 0.5}},
        {"id": "surroundings", "label": {"en": "Surroundings", "zh": "周围环境"},
         "covers": {"boxes": [[0, 175, 224, 224]]}}]})
    matches = align(explanation, library)
    for m in matches:
        console.print(f"cat photo anchor {m.label['en']}: {m.sensitivity:.0%} of the "
                      f"Grad-CAM++ map, risk {m.risk:.2f}{' (hit)' if m.hit else ''}")
    return bias_heatmap(pixels, explanation, library, matches, out_dir / "chelsea_bias.png",
                        privacy="blur", title="Grad-CAM++ weighted by anchor risk "
                                              "(face blurred for export)")


def run_demo(out_dir: Path, console: Console) -> DemoOutput:
    out_dir.mkdir(parents=True, exist_ok=True)
    with Progress(console=console, transient=True) as progress:
        credit = run_credit_demo(out_dir, console, progress)
        overlays = run_image_demo(out_dir, console, progress)
    return DemoOutput(credit_json=credit, overlays=overlays)

