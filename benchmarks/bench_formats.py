"""Bring your own model: per file format, the time to register a model from its file and
to explain one row, beside the same model registered and explained in memory.

The models are German credit models (six features) saved with each format's own tool
(``tests/formatkit.py``); registering from a file includes reading, hashing and, for ONNX,
converting the graph to PyTorch. Ours and the in-memory run alternate; medians.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import alternate, parse, versions

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from formatkit import credit, save_all
from xai_sandbox.explainers import explain
from xai_sandbox.models import register
from xai_sandbox.models.formats import load_model_file

METHOD = {"xgboost_json": "tree_shap", "xgboost_ubj": "tree_shap",
          "lightgbm_text": "tree_shap", "skops": "exact_shapley",
          "torch_export": "integrated_gradients", "torchscript": "integrated_gradients",
          "onnx": "integrated_gradients"}


def main() -> None:
    args = parse(__doc__ or "")
    repeats = 3 if args.quick else 15
    c = credit()
    print(f"# {versions()}; load {os.getloadavg()[0]:.2f}; median of {repeats}")
    print(f"{'format':14} {'method':22} {'register file':>14} {'in memory':>10} "
          f"{'explain file':>13} {'in memory':>10} {'ratio':>6}")
    common = {"version": "1", "class_names": ["good", "bad"], "schema": c.schema}
    with tempfile.TemporaryDirectory() as tmp:
        saved = save_all(c, Path(tmp))
        for fmt, (path, original, options) in saved.items():
            method = METHOD[fmt]

            def from_file(path: Path = path, options: dict = options) -> Any:
                loaded = load_model_file(path, **options)
                return register(loaded.adapter, model_id="file", **common)

            def in_memory(original: Any = original) -> Any:
                return register(original, model_id="memory", **common)

            reg = {k: t for k, (t, _) in alternate(
                {"file": from_file, "memory": in_memory}, repeats).items()}
            a, b = from_file(), in_memory()
            x = c.X[[1]]
            run = {k: t for k, (t, _) in alternate({
                "file": lambda a=a, method=method: explain(a, x, method=method, target=1),
                "memory": lambda b=b, method=method: explain(b, x, method=method, target=1),
            }, repeats).items()}
            print(f"{fmt:14} {method:22} {reg['file'] * 1e3:11.1f} ms {reg['memory'] * 1e3:7.1f}"
                  f" ms {run['file'] * 1e3:10.2f} ms {run['memory'] * 1e3:7.2f} ms "
                  f"{run['file'] / run['memory']:5.2f}x")
    print("explain ratio: file / in memory (1.00x: the loaded model costs the same)")


if __name__ == "__main__":
    main()
