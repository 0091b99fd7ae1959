"""Real models of every file format, trained on German credit and saved with each format's
own tool, beside the same model in memory (shared by the format, CLI and upload tests)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xai_sandbox.demos.credit import credit_models
from xai_sandbox.models.schema import FeatureSchema

# Six features, one categorical: exact Shapley enumerates 2^6 coalitions.
NAMES = ("checking_status", "duration", "credit_amount", "installment_rate", "age",
         "existing_credits")


@dataclass(frozen=True)
class Credit:
    schema: FeatureSchema
    rows: list[dict[str, Any]]
    X: np.ndarray          # encoded, float64
    y: np.ndarray
    train: np.ndarray
    mean: np.ndarray       # of the training rows: the torch models standardise inside
    scale: np.ndarray


def credit() -> Credit:
    m = credit_models()
    full = m.data.schema
    schema = FeatureSchema.from_dict({"version": "byom-1", "features": [
        f.to_dict() for f in full.features if f.name in NAMES]})
    rows = [{k: r[k] for k in schema.names} for r in m.data.rows]
    X = schema.encode(rows)
    train = np.asarray(m.train)
    return Credit(schema, rows, X, np.asarray(m.data.y), train, X[train].mean(axis=0),
                  X[train].std(axis=0) + 1e-9)


class Standardised(torch.nn.Module):
    """An MLP on standardised columns (the scaling is part of the network)."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray, hidden: int = 12) -> None:
        super().__init__()
        d = mean.shape[0]
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))
        self.net = torch.nn.Sequential(torch.nn.Linear(d, hidden), torch.nn.Tanh(),
                                       torch.nn.Linear(hidden, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.scale)


def train_mlp(c: Credit, epochs: int = 60) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(0)
    model = Standardised(c.mean, c.scale)
    with torch.no_grad():
        for p in model.net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    X = torch.as_tensor(c.X[c.train], dtype=torch.float32)
    y = torch.as_tensor(c.y[c.train], dtype=torch.long)
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    for _ in range(epochs):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(X), y).backward()
        opt.step()
    return model.eval()


def save_all(c: Credit, folder: Path) -> dict[str, tuple[Path, Any, dict[str, Any]]]:
    """Every format: ``name -> (file, the same model in memory, load options)``."""
    import lightgbm
    import skops.io
    import xgboost
    from safetensors.torch import save_file
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = c.X[c.train], c.y[c.train]
    out: dict[str, tuple[Path, Any, dict[str, Any]]] = {}
    xgb = xgboost.XGBClassifier(n_estimators=25, max_depth=3, random_state=0, n_jobs=1)
    xgb.fit(X, y)
    xgb.save_model(folder / "credit.json")
    xgb.save_model(folder / "credit.ubj")
    out["xgboost_json"] = (folder / "credit.json", xgb, {})
    out["xgboost_ubj"] = (folder / "credit.ubj", xgb, {})
    gbm = lightgbm.LGBMClassifier(n_estimators=25, num_leaves=8, verbose=-1, random_state=0)
    gbm.fit(X, y)
    gbm.booster_.save_model(str(folder / "credit.txt"))
    out["lightgbm_text"] = (folder / "credit.txt", gbm, {})
    lr = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, y)
    skops.io.dump(lr, folder / "credit.skops")
    out["skops"] = (folder / "credit.skops", lr, {})
    mlp = train_mlp(c)
    example = (torch.as_tensor(X[:4], dtype=torch.float32),)
    program = torch.export.export(mlp, example,
                                  dynamic_shapes=({0: torch.export.Dim("n", min=1)},))
    torch.export.save(program, folder / "credit.pt2")
    out["torch_export"] = (folder / "credit.pt2", mlp, {})
    with warnings.catch_warnings():
        # torch deprecates TorchScript and its legacy ONNX exporter (the dynamo one needs
        # onnxscript); both are how many teams' models arrive today.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        torch.jit.save(torch.jit.script(mlp), folder / "credit.pt")
        torch.onnx.export(mlp, example, folder / "credit.onnx", dynamo=False,
                          input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}})
    save_file({k: v.contiguous() for k, v in mlp.state_dict().items()},
              str(folder / "credit.safetensors"))
    out["torchscript"] = (folder / "credit.pt", mlp,
                          {"weights": folder / "credit.safetensors"})
    out["onnx"] = (folder / "credit.onnx", mlp, {})
    return out


def write_csv(c: Credit, path: Path, rows: np.ndarray, target: bool = True) -> Path:
    import csv

    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow([*c.schema.names, *(["class"] if target else [])])
        for i in rows:
            w.writerow([c.rows[i][n] for n in c.schema.names]
                       + ([["good", "bad"][int(c.y[i])]] if target else []))
    return path
