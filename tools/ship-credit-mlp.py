"""Train the German credit MLP and write its weights into the package
(src/xai_sandbox/data/german_credit/mlp-weights.npz), so every machine serves the same
model whatever its CPU. Re-record its quality baseline afterwards:
``xai-sandbox validate --model german-credit-mlp --rebaseline``."""

from __future__ import annotations

from pathlib import Path

from xai_sandbox.datasets.german_credit import load_german_credit
from xai_sandbox.demos.credit import MLP_SETTINGS, SHIPPED_MLP, save_mlp_weights, train_credit_mlp

data = load_german_credit()
train, _ = data.split(seed=int(MLP_SETTINGS["split_seed"]))
out = Path(__file__).resolve().parents[1] / "src/xai_sandbox/data/german_credit" / SHIPPED_MLP
save_mlp_weights(train_credit_mlp(data, train), data, out)
print(f"wrote {out} ({out.stat().st_size} bytes)")
