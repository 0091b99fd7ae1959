"""The German credit data (Statlog), shipped as package data.

Hofmann, H. (1994). Statlog (German Credit Data). UCI Machine Learning Repository,
https://doi.org/10.24432/C5NC77. Licensed CC BY 4.0; the attribution travels with the data
in ``xai_sandbox/data/german_credit/README.md``.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np

from xai_sandbox.models.schema import FeatureSchema

__all__ = ["CLASS_NAMES", "GermanCredit", "load_german_credit"]

CLASS_NAMES = ("good", "bad")
ATTRIBUTION = ("Hofmann, H. (1994). Statlog (German Credit Data). UCI Machine Learning "
               "Repository, https://doi.org/10.24432/C5NC77. CC BY 4.0.")


@dataclass(frozen=True)
class GermanCredit:
    """Rows as dictionaries, their encoding, labels (0 good, 1 bad) and the schema."""

    rows: tuple[dict[str, Any], ...]
    X: np.ndarray
    y: np.ndarray
    schema: FeatureSchema
    sha256: str

    def split(self, test_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Deterministic (train, test) row indices, stratified by label."""
        rng = np.random.default_rng(seed)
        train, test = [], []
        for label in (0, 1):
            idx = rng.permutation(np.flatnonzero(self.y == label))
            cut = round(len(idx) * test_fraction)
            test.extend(idx[:cut].tolist())
            train.extend(idx[cut:].tolist())
        return np.sort(np.array(train)), np.sort(np.array(test))


def _package_file(name: str) -> Any:
    return resources.files("xai_sandbox").joinpath("data", "german_credit", name)


@functools.lru_cache(maxsize=1)
def load_german_credit() -> GermanCredit:
    """Load the 1,000 applicants; labels are 0 (good) and 1 (bad)."""
    schema = FeatureSchema.load(str(_package_file("schema.yaml")))
    raw = _package_file("german.data").read_bytes()
    rows, labels = [], []
    for line in raw.decode("ascii").splitlines():
        fields = line.split()
        if not fields:
            continue
        row: dict[str, Any] = {}
        for spec, value in zip(schema.features, fields[:-1], strict=True):
            row[spec.name] = value if spec.kind == "categorical" else float(value)
        rows.append(row)
        labels.append(int(fields[-1]) - 1)
    X = schema.encode(rows)
    return GermanCredit(rows=tuple(rows), X=X, y=np.array(labels, dtype=np.int64),
                        schema=schema, sha256=hashlib.sha256(raw).hexdigest())
