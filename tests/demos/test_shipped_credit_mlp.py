"""The German credit MLP every machine serves is the one shipped with the package: its
weights load from ``data/german_credit/mlp-weights.npz`` (so its fingerprint, and the
quality baseline recorded for it, are the same on every CPU), only while they belong to
this data and these training settings, and training afresh gives a model as good."""

from __future__ import annotations

import numpy as np
import torch

from xai_sandbox.datasets.german_credit import load_german_credit
from xai_sandbox.demos import credit
from xai_sandbox.models.fingerprint import fingerprint_module


def test_the_served_mlp_is_the_shipped_one(tmp_path) -> None:
    data = load_german_credit()
    shipped = credit._shipped_mlp(data)
    assert shipped is not None
    served = credit.credit_models().mlp
    assert served.fingerprint == fingerprint_module(shipped)
    x = torch.as_tensor(data.X[:50], dtype=torch.float32)
    with torch.no_grad():
        assert torch.equal(shipped(x), served.adapter.module(x))  # type: ignore[attr-defined]
    # The file round-trips through save_mlp_weights, training key included.
    again = tmp_path / "again.npz"
    credit.save_mlp_weights(shipped, data, again)
    with np.load(again, allow_pickle=False) as a, np.load(
            credit.resources.files("xai_sandbox.data.german_credit") / credit.SHIPPED_MLP,
            allow_pickle=False) as b:
        assert sorted(a.files) == sorted(b.files)
        assert all(np.array_equal(a[k], b[k]) for k in a.files)


def test_weights_of_other_data_or_settings_are_not_used(monkeypatch) -> None:
    data = load_german_credit()
    assert credit._shipped_mlp(data) is not None
    monkeypatch.setitem(credit.MLP_SETTINGS, "epochs", 401)   # another training recipe
    assert credit._shipped_mlp(data) is None


def test_training_afresh_gives_a_model_as_accurate_as_the_shipped_one() -> None:
    data = load_german_credit()
    train, test = data.split(seed=int(credit.MLP_SETTINGS["split_seed"]))  # type: ignore[call-overload]
    shipped = credit._shipped_mlp(data)
    fresh = credit.train_credit_mlp(data, train)
    x = torch.as_tensor(data.X[test], dtype=torch.float32)
    with torch.no_grad():
        acc = [float((m(x).argmax(1).numpy() == data.y[test]).mean()) for m in (shipped, fresh)]
    assert abs(acc[0] - acc[1]) <= 0.03 and min(acc) >= 0.70
