"""German credit models: a PyTorch MLP and a LightGBM classifier, trained reproducibly.

Both are trained on the same deterministic 80/20 split. The MLP learns on standardised
columns; the standardisation is then folded into its first linear layer, so the shipped
model is a plain Linear/ReLU stack over the raw encoded columns (which LRP also handles).
Its weights are cached, keyed by the data's hash and the training settings.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xai_sandbox.datasets.german_credit import CLASS_NAMES, GermanCredit, load_german_credit
from xai_sandbox.models.registry import RegisteredModel, register
from xai_sandbox.settings import cache_dir

__all__ = ["CreditModels", "credit_models", "train_lightgbm", "train_mlp"]

MLP_SETTINGS = {"hidden": [32, 16], "epochs": 400, "lr": 0.01, "weight_decay": 1e-3,
                 "seed": 0, "split_seed": 0}


def _mlp(d: int, hidden: list[int]) -> torch.nn.Sequential:
    layers: list[torch.nn.Module] = []
    width = d
    for h in hidden:
        layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
        width = h
    layers.append(torch.nn.Linear(width, 2))
    return torch.nn.Sequential(*layers)


def train_mlp(X: np.ndarray, y: np.ndarray, *, hidden: list[int], epochs: int, lr: float,
              weight_decay: float, seed: int) -> torch.nn.Sequential:
    """Full-batch Adam on standardised columns, then fold the scaling into layer one."""
    mean = X.mean(axis=0)
    std = X.std(axis=0)
    std[std == 0] = 1.0
    Xs = torch.as_tensor((X - mean) / std, dtype=torch.float32)
    yt = torch.as_tensor(y)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _mlp(X.shape[1], hidden)
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        for _ in range(epochs):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(Xs), yt)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
    first = model[0]
    if not isinstance(first, torch.nn.Linear):  # pragma: no cover - _mlp builds Linear first
        raise TypeError("the MLP must start with a Linear layer")
    with torch.no_grad():
        scale = torch.as_tensor(1.0 / std, dtype=torch.float32)
        shift = torch.as_tensor(mean / std, dtype=torch.float32)
        first.bias.sub_(first.weight @ shift)
        first.weight.mul_(scale)
    return model.eval()


def train_lightgbm(X: np.ndarray, y: np.ndarray, seed: int = 0):  # type: ignore[no-untyped-def]
    """A small deterministic LightGBM classifier (single thread, fixed seed)."""
    import lightgbm

    model = lightgbm.LGBMClassifier(n_estimators=150, learning_rate=0.05, num_leaves=15,
                                    min_child_samples=10, subsample=1.0, colsample_bytree=1.0,
                                    random_state=seed, deterministic=True, force_col_wise=True,
                                    n_jobs=1, verbose=-1)
    model.fit(X, y)
    return model


@dataclass(frozen=True)
class CreditModels:
    data: GermanCredit
    train: np.ndarray
    test: np.ndarray
    mlp: RegisteredModel
    lightgbm: RegisteredModel
    accuracy: dict[str, float]


SHIPPED_MLP = "mlp-weights.npz"
"""The trained MLP's weights, shipped with the data (``data/german_credit/``): float32
training does not give the same bits on every CPU, so the weights a baseline is recorded
for are the weights every machine serves. ``tools/ship-credit-mlp.py`` writes them."""


def mlp_training_key(data: GermanCredit) -> str:
    """What the MLP's weights depend on: the data's digest and the training settings."""
    return hashlib.sha256(json.dumps([data.sha256, MLP_SETTINGS], sort_keys=True)
                          .encode()).hexdigest()[:16]


def _shipped_mlp(data: GermanCredit) -> torch.nn.Sequential | None:
    """The shipped weights, if they were trained on this data with these settings."""
    found = resources.files("xai_sandbox.data.german_credit") / SHIPPED_MLP
    if not found.is_file():
        return None
    with found.open("rb") as handle, np.load(handle, allow_pickle=False) as saved:
        if str(saved["training_key"]) != mlp_training_key(data):
            return None
        state = {k: torch.from_numpy(saved[k].copy()) for k in saved.files
                 if k != "training_key"}
    model = _mlp(data.X.shape[1], list(MLP_SETTINGS["hidden"]))  # type: ignore[call-overload]
    model.load_state_dict(state)
    return model.eval()


def save_mlp_weights(model: torch.nn.Sequential, data: GermanCredit, path: Path) -> None:
    """Write ``model``'s weights with the training key they belong to (numpy's npz: data,
    never code)."""
    arrays = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    np.savez(path, training_key=np.asarray(mlp_training_key(data)), **arrays)


def _cached_mlp(data: GermanCredit, train: np.ndarray) -> torch.nn.Sequential:
    shipped = _shipped_mlp(data)
    if shipped is not None:
        return shipped
    key = hashlib.sha256(json.dumps([data.sha256, MLP_SETTINGS, torch.__version__],
                                    sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / f"german-credit-mlp-{key}.pt"
    if path.exists():
        model = _mlp(data.X.shape[1], list(MLP_SETTINGS["hidden"]))  # type: ignore[call-overload]
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    model = train_credit_mlp(data, train)
    tmp = path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.chmod(0o600)
    tmp.replace(path)
    return model


def train_credit_mlp(data: GermanCredit, train: np.ndarray) -> torch.nn.Sequential:
    """Train the German credit MLP from scratch with the shipped settings."""
    settings = {k: v for k, v in MLP_SETTINGS.items() if k != "split_seed"}
    return train_mlp(data.X[train], data.y[train], **settings)  # type: ignore[arg-type]


@functools.lru_cache(maxsize=1)
def credit_models() -> CreditModels:
    """Train (or load from the cache) and register both German credit models."""
    data = load_german_credit()
    train, test = data.split(seed=int(MLP_SETTINGS["split_seed"]))  # type: ignore[call-overload]
    reference = data.schema.reference_row(data.X[train])
    mlp = _cached_mlp(data, train)
    gbm = train_lightgbm(data.X[train], data.y[train])
    common: dict[str, Any] = {"task": "classification", "class_names": CLASS_NAMES,
                              "schema": data.schema, "reference": reference,
                              "training_data": data.X[train]}
    reg_mlp = register(mlp, model_id="german-credit-mlp", version="1", **common)
    reg_gbm = register(gbm, model_id="german-credit-lightgbm", version="1", **common)
    acc = {
        m.model_id: float((m.adapter.predict(data.X[test]).argmax(axis=1) == data.y[test]).mean())
        for m in (reg_mlp, reg_gbm)
    }
    return CreditModels(data=data, train=train, test=test, mlp=reg_mlp, lightgbm=reg_gbm,
                        accuracy=acc)
