"""The global report of a finished batch (:class:`~xai_sandbox.reports.global_report.
GlobalReport`), aggregated in two streamed passes, so memory stays bounded by the sample
whatever the batch's size.

The shards are read back checked against the manifest; the features' values come from the
batch's input, which must still be the file the batch read (same size and modification
time), read in the same shards.

1. Every row: the exact mean |attribution| per feature. A uniform sample of ``sample_rows``
   rows (the rows of the smallest seeded random keys) for the bootstrap intervals (the
   mean of |attribution| over resampled rows, as multinomial counts) and the plots.
2. Every row: per segment of each protected feature (its categories; a number's quartiles,
   from the sample), the rows, the share adverse and the mean share of |attribution| on
   the protected features and on their likely proxies (found at registration).

With ``previous`` (another batch's folder, of the same features), the drift of each
feature's attribution between the two batches' samples (PSI, KS, change of mean
|attribution|: :func:`~xai_sandbox.monitor.drift.compare_windows`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from xai_sandbox.errors import InvalidInputError, number_in
from xai_sandbox.explainers.explanation import library_versions
from xai_sandbox.reports.global_report import (
    Dependence,
    FeatureImportance,
    GlobalReport,
    SegmentShare,
)
from xai_sandbox.workflows.batch import MANIFEST, read_shards
from xai_sandbox.workflows.served import ServedModel

__all__ = ["global_report"]

DEPENDENCE_FEATURES = 6
DEPENDENCE_POINTS = 2000


def _manifest(folder: Path, name: str) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.is_file():
        raise InvalidInputError(name, "must be a finished batch's folder (it has no "
                                "manifest.json)", str(folder))
    manifest: dict[str, Any] = json.loads(path.read_text())
    return manifest


def _attributions(table: Any, features: Sequence[str]) -> np.ndarray:
    return np.column_stack([table.column(f"attr.{n}").to_numpy(zero_copy_only=False)
                            for n in features]).astype(np.float64)


def _shards(folder: Path, manifest: dict[str, Any], with_values: bool
            ) -> Iterator[tuple[Any, Any]]:
    """Each shard's table with, when asked, the input rows it explained (a data frame)."""
    features = list(manifest["features"])
    if not with_values:
        for table in read_shards(folder):
            yield table, None
        return
    from xai_sandbox.datasets.tables import iter_table

    source = Path(manifest["input"]["path"])
    stat = source.stat() if source.is_file() else None
    if stat is None or (stat.st_size, stat.st_mtime_ns) != (
            manifest["input"]["size"], manifest["input"]["modified_ns"]):
        raise InvalidInputError("output", "is a batch whose input file is gone or changed "
                                "since (the report reads the features' values from it)",
                                str(source))
    frames = iter_table(source, int(manifest["shard_rows"]), columns=features)
    for table, frame in zip(read_shards(folder), frames, strict=True):
        if len(frame) != table.num_rows:
            raise InvalidInputError("output", "has a shard whose rows differ from the "
                                    "input's", str(folder))
        yield table, frame


class _Sample:
    """A uniform sample of rows without replacement: the ``size`` rows of the smallest
    random keys, the keys drawn per shard from the seed (the same sample every time)."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed = size, seed
        self.keys = np.empty(0)
        self.attrs: np.ndarray | None = None
        self.values: Any = None

    def add(self, index: int, attrs: np.ndarray, frame: Any) -> None:
        keys = np.random.default_rng([self.seed, index]).random(len(attrs))
        keys = np.concatenate([self.keys, keys])
        attrs = attrs if self.attrs is None else np.concatenate([self.attrs, attrs])
        if frame is not None:
            import pandas as pd  # type: ignore[import-untyped]

            frame = frame.reset_index(drop=True)
            frame = frame if self.values is None else pd.concat([self.values, frame],
                                                                ignore_index=True)
        keep = np.sort(np.argsort(keys, kind="stable")[: self.size])
        self.keys, self.attrs = keys[keep], attrs[keep]
        self.values = None if frame is None else frame.iloc[keep].reset_index(drop=True)


def _sample(folder: Path, manifest: dict[str, Any], size: int, seed: int,
            with_values: bool) -> tuple[_Sample, np.ndarray, int]:
    """Pass 1: the sample, the sum of |attribution| per feature, the number of rows."""
    sample = _Sample(size, seed)
    total = np.zeros(len(manifest["features"]))
    rows = 0
    for index, (table, frame) in enumerate(_shards(folder, manifest, with_values)):
        attrs = _attributions(table, manifest["features"])
        total += np.abs(attrs).sum(axis=0)
        rows += len(attrs)
        sample.add(index, attrs, frame)
    return sample, total, rows


def _bootstrap(abs_sample: np.ndarray, n_bootstrap: int, confidence: float, seed: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of the mean of each column over resampled rows."""
    rng = np.random.default_rng([seed, 1])
    n = len(abs_sample)
    means = []
    for start in range(0, n_bootstrap, 64):
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=min(64, n_bootstrap - start))
        means.append(counts @ abs_sample / n)
    stacked = np.concatenate(means)
    tail = (1.0 - confidence) / 2.0
    return (np.quantile(stacked, tail, axis=0), np.quantile(stacked, 1.0 - tail, axis=0))


def _segmenter(served: ServedModel, name: str, sample_values: Any
               ) -> tuple[list[str], Any]:
    """A protected feature's segment labels and the function giving each row's segment."""
    spec = served.schema.feature(name)
    if spec.kind == "numeric":
        values = np.asarray(sample_values[name], dtype=np.float64)
        edges = np.unique(np.quantile(values, [0.25, 0.5, 0.75]))
        labels = [f"{edges[0]:g} or less"] + [
            f"over {lo:g} to {hi:g}" for lo, hi in itertools.pairwise(edges)] + [
            f"over {edges[-1]:g}"]
        return labels, lambda column: np.digitize(
            np.asarray(column, dtype=np.float64), edges, right=True)
    codes = list(spec.category_codes())
    labels = [f"{c} ({spec.category(c).display.get('en', c)})"  # type: ignore[union-attr]
              for c in codes] + ["other"]
    return labels, lambda column: np.array([codes.index(str(v)) if str(v) in codes
                                            else len(codes) for v in column])


def global_report(served: ServedModel, output: str | Path, *,
                  previous: str | Path | None = None, sample_rows: int = 10_000,
                  n_bootstrap: int = 1000, confidence: float = 0.95,
                  seed: int = 0) -> GlobalReport:
    """The global report of the finished batch in ``output``, explained with ``served``.

    Parameters
    ----------
    previous:
        Another finished batch's folder with the same features: adds the drift section.
    sample_rows:
        Rows sampled uniformly for the bootstrap intervals, the plots and the drift test.
    n_bootstrap, confidence:
        Resamples and level of the percentile intervals.
    """
    out = Path(output)
    number_in(sample_rows, 10, 10_000_000, "sample_rows", integer=True)
    number_in(n_bootstrap, 100, 100_000, "n_bootstrap", integer=True)
    number_in(confidence, 0.5, 0.999, "confidence")
    manifest = _manifest(out, "output")
    if manifest["fingerprint"] != served.model.fingerprint:
        raise InvalidInputError("served", "must be the model the batch was explained with "
                                f"(fingerprint {manifest['fingerprint'][:12]}...)",
                                served.key)
    features = list(manifest["features"])
    schema = served.schema
    sample, total, rows = _sample(out, manifest, sample_rows, seed, with_values=True)
    assert sample.attrs is not None
    means = total / rows
    low, high = _bootstrap(np.abs(sample.attrs), n_bootstrap, confidence, seed)
    protected = tuple(f.name for f in schema.features if f.protected)
    proxies = {p: tuple(served.proxies.get(p, ())) for p in protected}
    proxy_set = sorted({x for px in proxies.values() for x in px} - set(protected))
    overall_sum = float(means.sum())
    importance = sorted((FeatureImportance(
        feature=n, display=schema.feature(n).display.get("en", n), mean_abs=float(means[j]),
        low=float(low[j]), high=float(high[j]),
        share=float(means[j] / overall_sum) if overall_sum else 0.0,
        protected=n in protected,
        proxy_of=tuple(p for p, px in proxies.items() if n in px))
        for j, n in enumerate(features)), key=lambda f: -f.mean_abs)
    dependence = tuple(_dependence(served, f.feature, features, sample)
                       for f in importance[:DEPENDENCE_FEATURES])
    segments, overall = _segments(served, out, manifest, sample, protected, proxy_set)
    drift = before = None
    if previous is not None:
        drift, before = _drift(Path(previous), features, sample, sample_rows, seed)
    digest = hashlib.sha256((out / MANIFEST).read_bytes()).hexdigest()
    return GlobalReport(
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        model=dict(manifest["model"]), method=manifest["method"],
        output_space=_output_space(out), rows=rows,
        batch={"folder": str(out.resolve()), "manifest_sha256": digest,
               "shards": len(manifest["shards"])},
        sample_rows=len(sample.attrs), n_bootstrap=n_bootstrap, confidence=confidence,
        importance=tuple(importance), dependence=dependence, segments=tuple(segments),
        protected=protected, proxies=proxies, overall=overall, drift=drift,
        previous=before, library_versions=library_versions())


def _output_space(out: Path) -> str:
    first = next(read_shards(out, columns=["output_space"]))
    return str(first.column("output_space")[0]) if first.num_rows else ""


def _dependence(served: ServedModel, name: str, features: list[str], sample: _Sample
                ) -> Dependence:
    assert sample.attrs is not None
    spec = served.schema.feature(name)
    n = min(len(sample.attrs), DEPENDENCE_POINTS)
    values = sample.values[name].iloc[:n]
    categorical = spec.kind != "numeric"
    return Dependence(
        feature=name, display=spec.display.get("en", name), categorical=categorical,
        values=tuple(str(v) if categorical else float(v) for v in values),
        attributions=tuple(float(a) for a in sample.attrs[:n, features.index(name)]),
        categories={c.code: c.display.get("en", c.code) for c in spec.categories})


def _segments(served: ServedModel, out: Path, manifest: dict[str, Any], sample: _Sample,
              protected: tuple[str, ...], proxy_set: list[str]
              ) -> tuple[list[SegmentShare], dict[str, float]]:
    """Pass 2: rows, adverse rate and mean shares per segment of each protected feature."""
    features = list(manifest["features"])
    p_cols = [features.index(p) for p in protected]
    x_cols = [features.index(x) for x in proxy_set]
    split = {p: _segmenter(served, p, sample.values) for p in protected}
    # per protected feature, per segment: rows, adverse, sum of protected and proxy shares
    sums = {p: np.zeros((len(split[p][0]), 4)) for p in protected}
    whole = np.zeros(4)
    for table, frame in _shards(out, manifest, with_values=True):
        attrs = np.abs(_attributions(table, features))
        totals = attrs.sum(axis=1)
        totals[totals == 0] = 1.0
        cells = np.column_stack([
            np.ones(len(attrs)),
            table.column("adverse").to_numpy(zero_copy_only=False).astype(np.float64),
            attrs[:, p_cols].sum(axis=1) / totals, attrs[:, x_cols].sum(axis=1) / totals])
        whole += cells.sum(axis=0)
        for p in protected:
            np.add.at(sums[p], split[p][1](frame[p]), cells)
    rows = []
    for p in protected:
        for label, (n, adverse, ps, xs) in zip(split[p][0], sums[p], strict=True):
            if n:
                rows.append(SegmentShare(feature=p, segment=label, rows=int(n),
                                         adverse_rate=float(adverse / n),
                                         protected_share=float(ps / n),
                                         proxy_share=float(xs / n)))
    n = max(whole[0], 1.0)
    overall = {"rows": int(whole[0]), "adverse_rate": float(whole[1] / n),
               "protected_share": float(whole[2] / n), "proxy_share": float(whole[3] / n)}
    return rows, overall


def _drift(previous: Path, features: list[str], sample: _Sample, sample_rows: int,
           seed: int) -> tuple[tuple[dict[str, Any], ...], dict[str, Any]]:
    from xai_sandbox.monitor.drift import compare_windows

    assert sample.attrs is not None
    manifest = _manifest(previous, "previous")
    shared = [n for n in features if n in manifest["features"]]
    if not shared:
        raise InvalidInputError("previous", "must be a batch with features of this one",
                                str(previous))
    before, _, rows = _sample(previous, manifest, sample_rows, seed, with_values=False)
    assert before.attrs is not None
    theirs = list(manifest["features"])
    found = compare_windows(
        {n: before.attrs[:, theirs.index(n)].tolist() for n in shared},
        {n: sample.attrs[:, features.index(n)].tolist() for n in shared})
    return (tuple(d.to_dict() for d in found),
            {"folder": str(previous.resolve()), "rows": rows, "method": manifest["method"],
             **manifest["model"]})
