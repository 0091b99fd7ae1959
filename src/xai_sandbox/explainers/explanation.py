"""`Explanation`: the one result type every explainer returns.

It is immutable (its arrays are read-only copies), carries its own provenance (method,
parameters, library versions, seed, model fingerprint, wall time) and round-trips through
canonical JSON. It is never pickled.
"""

from __future__ import annotations

import copy as _copy
import dataclasses
import functools
import importlib.metadata
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np

from xai_sandbox.audit.canonical import canonical_json, canonical_loads
from xai_sandbox.errors import InvalidInputError

__all__ = ["SCHEMA_VERSION", "TEXT_RESULT_KINDS", "Explanation", "TextDetail", "library_versions"]

SCHEMA_VERSION = "xai-sandbox.explanation/1"

_ARRAY_FIELDS = ("values", "target", "prediction", "baseline", "expected_value", "delta")
_LIBRARIES = ("xai-sandbox", "torch", "captum", "shap", "numpy", "scikit-learn", "lightgbm",
              "xgboost", "lime", "transformers")


def library_versions(*names: str) -> dict[str, str]:
    """Installed versions of the named distributions (all the relevant ones by default)."""
    return dict(_versions(names or _LIBRARIES))


@functools.lru_cache(maxsize=8)
def _versions(names: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    # Reading package metadata costs about a millisecond a package: once per process.
    found: dict[str, str] = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return tuple(found.items())


def _frozen(array: Any, dtype: Any = None) -> np.ndarray | None:
    if array is None:
        return None
    copy = np.array(array, dtype=dtype, copy=True)
    copy.setflags(write=False)
    return copy


def _frozen_block(block: Mapping[str, Any], parameter: str = "quality") -> Mapping[str, Any]:
    """A read-only, JSON-safe copy of a quality block (checked by a canonical round trip,
    so a block that cannot be serialised fails where it is attached)."""
    if not isinstance(block, Mapping):
        raise InvalidInputError(parameter, "must be a mapping (a quality block)",
                                type(block).__name__)
    plain: dict[str, Any] = canonical_loads(canonical_json(dict(block)))
    return MappingProxyType(plain)


def _plain(value: Any) -> Any:
    """A JSON-safe copy: numpy scalars and arrays as Python values, tuples as lists, and a
    non-finite number as ``None`` (JSON has none)."""
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    raise InvalidInputError("text.result", "must hold JSON values (numbers, texts, lists, "
                            "mappings)", type(value).__name__)


#: The rich results a text method can carry beside its attributions.
TEXT_RESULT_KINDS = ("probe_report", "patching", "trigger", "self_explanation")


@dataclasses.dataclass(frozen=True)
class TextDetail:
    """The full result of a text method whose answer is more than attributions.

    Attributes
    ----------
    kind:
        Which result it is, one of :data:`TEXT_RESULT_KINDS`: a linear-probe report
        (``ProbeReport``), activation-patching maps (``PatchingResult``), a universal
        trigger with its evaluation (``TriggerResult``) or a self-explanation check
        (``SelfExplanationReport``).
    result:
        That result's ``to_dict()``: read-only and JSON-safe (a non-finite number is
        ``None``).
    """

    kind: str
    result: Mapping[str, Any]

    def __post_init__(self) -> None:
        if self.kind not in TEXT_RESULT_KINDS:
            raise InvalidInputError("text.kind", f"must be one of {list(TEXT_RESULT_KINDS)}",
                                    self.kind)
        if not isinstance(self.result, Mapping):
            raise InvalidInputError("text.result", "must be a mapping (a result's to_dict())",
                                    type(self.result).__name__)
        object.__setattr__(self, "result", _frozen_block(_plain(self.result), "text.result"))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "result": _copy.deepcopy(_thawed(self.result))}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TextDetail:
        return cls(kind=data["kind"], result=data["result"])


def _thawed(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thawed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_thawed(v) for v in value]
    return value


def _encode_array(array: np.ndarray | None) -> dict[str, Any] | None:
    if array is None:
        return None
    # float32 -> float64 is exact and RFC 8785 prints the shortest round-tripping form.
    data = array.astype(np.float64).ravel().tolist() if array.dtype.kind == "f" else (
        array.ravel().tolist())
    return {"dtype": array.dtype.str.lstrip("<>=|"), "shape": list(array.shape), "data": data}


def _decode_array(blob: Mapping[str, Any] | None) -> np.ndarray | None:
    if blob is None:
        return None
    return np.asarray(blob["data"], dtype=np.dtype(blob["dtype"])).reshape(blob["shape"])


@dataclasses.dataclass(frozen=True, eq=False)
class Explanation:
    """Attributions of one batch of inputs with everything needed to reproduce them.

    Attributes
    ----------
    method:
        Registered name of the explainer (``"integrated_gradients"``, ...).
    values:
        Attributions. Their shape is the input's shape at the level the method works at:
        ``(n, n_columns)`` for column methods on tabular data, ``(n, n_features)`` for methods
        that play whole features (Shapley values over one-hot groups), ``(n, C, H, W)`` for
        pixel methods, ``(n, 1, H, W)`` for class-activation maps, ``(n, T)`` for tokens.
    target:
        The explained output index, one per row.
    prediction:
        The model's outputs for each row, in ``output_space``.
    baseline:
        The reference input(s) the attributions are relative to, where the method has one.
    expected_value:
        The output the attributions start from, per row: f(baseline) or the mean output
        over the background (Shapley methods).
    delta:
        Per row, ``sum(values) - (prediction[target] - expected_value)``: the completeness
        (IG, DeepLift, LRP) or additivity (Shapley) error. ``None`` where the method has none.
    feature_names:
        Names of the last axis of ``values`` for tabular data.
    output_space:
        What the explained number is: ``"logit"``, ``"probability"``, ``"margin"``,
        ``"output"``, or ``"contrast"`` (a difference of two outputs).
    parameters:
        The method's parameters, JSON-safe.
    seed:
        The ``random_state`` used, for methods that sample.
    quality:
        The quality block of the explanation once assessed
        (:func:`xai_sandbox.quality.assess.assessed` attaches it through
        :meth:`with_quality`); ``None`` before. :meth:`to_dict` and :meth:`to_json` carry
        it under ``"quality"`` once it is set, and leave the key out before, so an
        unassessed explanation serialises as it always did.
    text:
        The full result of a text method whose answer is more than attributions (a probe
        report, patching maps, a trigger, a self-explanation check), as a
        :class:`TextDetail`; ``None`` otherwise. Serialised under ``"text"`` only when
        set, as ``quality`` is.
    """

    method: str
    values: np.ndarray
    target: np.ndarray
    prediction: np.ndarray
    output_space: str
    parameters: Mapping[str, Any]
    library_versions: Mapping[str, str]
    wall_time_s: float
    baseline: np.ndarray | None = None
    expected_value: np.ndarray | None = None
    delta: np.ndarray | None = None
    feature_names: tuple[str, ...] | None = None
    seed: int | None = None
    model: Mapping[str, str] | None = None
    schema_version: str = SCHEMA_VERSION
    quality: Mapping[str, Any] | None = None
    text: TextDetail | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        for name in _ARRAY_FIELDS:
            set_(self, name, _frozen(getattr(self, name)))
        set_(self, "parameters", MappingProxyType(dict(self.parameters)))
        set_(self, "library_versions", MappingProxyType(dict(self.library_versions)))
        if self.model is not None:
            set_(self, "model", MappingProxyType(dict(self.model)))
        if self.quality is not None:
            set_(self, "quality", _frozen_block(self.quality))
        if self.text is not None and not isinstance(self.text, TextDetail):
            raise InvalidInputError("text", "must be a TextDetail or None",
                                    type(self.text).__name__)
        if self.feature_names is not None:
            set_(self, "feature_names", tuple(self.feature_names))
            if self.values.shape[-1] != len(self.feature_names):
                raise InvalidInputError(
                    "feature_names", f"needs one name per column of values "
                    f"({self.values.shape[-1]})", len(self.feature_names))

    @property
    def assessed(self) -> bool:
        """Whether a quality block is attached."""
        return self.quality is not None

    def with_quality(self, block: Mapping[str, Any]) -> Explanation:
        """This explanation with its quality block attached (a new object: an
        explanation is immutable). ``block`` must be a JSON-safe mapping with a
        ``verdict``, as :func:`xai_sandbox.quality.assess.assess` returns."""
        if not isinstance(block, Mapping) or not isinstance(block.get("verdict"), Mapping):
            raise InvalidInputError("block", "must be a quality block (a mapping with a "
                                    "'verdict', as assess() returns)", type(block).__name__)
        return dataclasses.replace(self, quality=block)

    # ------------------------------------------------------------------ derived views
    @property
    def n_rows(self) -> int:
        return int(self.values.shape[0])

    def explained_output(self) -> np.ndarray:
        """The explained output of each row: ``prediction[i, target[i]]``."""
        rows = np.arange(self.prediction.shape[0])
        return np.asarray(self.prediction[rows, self.target], dtype=np.float64)

    @property
    def completeness_error(self) -> float | None:
        """Largest relative completeness or additivity error over the rows, or ``None``.

        ``|delta| / |f(x) - expected_value|``, with the gap floored at 1e-12.
        """
        if self.delta is None or self.expected_value is None:
            return None
        gap = np.abs(self.explained_output() - self.expected_value)
        return float(np.max(np.abs(self.delta) / np.maximum(gap, 1e-12)))

    def ranked(self, row: int = 0, k: int | None = None) -> list[tuple[str, float]]:
        """Features of one row by decreasing absolute attribution (tabular values only)."""
        if self.values.ndim != 2 or self.feature_names is None:
            raise InvalidInputError("self", "ranked() needs tabular values with feature names",
                                    self.values.shape)
        if not 0 <= row < self.n_rows:
            raise InvalidInputError("row", f"must be in [0, {self.n_rows})", row)
        order = np.argsort(-np.abs(self.values[row]), kind="stable")
        pairs = [(self.feature_names[j], float(self.values[row, j])) for j in order]
        return pairs if k is None else pairs[:k]

    def grouped(self, groups: Sequence[Sequence[int]], names: Sequence[str]) -> Explanation:
        """Sum column attributions into feature groups (one-hot columns into their feature).

        Sums preserve completeness, so ``delta`` carries over unchanged.
        """
        if self.values.ndim != 2:
            raise InvalidInputError("self", "grouped() needs (rows, columns) values",
                                    self.values.shape)
        if len(groups) != len(names):
            raise InvalidInputError("names", f"needs one name per group ({len(groups)})",
                                    len(names))
        n_cols = self.values.shape[1]
        covered = sorted(c for g in groups for c in g)
        if covered != list(range(n_cols)):
            raise InvalidInputError("groups", f"must cover columns 0..{n_cols - 1} once each",
                                    covered)
        values = np.stack([self.values[:, list(g)].sum(axis=1) for g in groups], axis=1)
        params = dict(self.parameters, grouped=True)
        return dataclasses.replace(self, values=values, feature_names=tuple(names),
                                   parameters=params)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dictionary; :meth:`from_dict` inverts it exactly."""
        out: dict[str, Any] = {
            "schema_version": self.schema_version,
            "method": self.method,
            "output_space": self.output_space,
            "parameters": dict(self.parameters),
            "library_versions": dict(self.library_versions),
            "wall_time_s": self.wall_time_s,
            "feature_names": list(self.feature_names) if self.feature_names else None,
            "seed": self.seed,
            "model": dict(self.model) if self.model is not None else None,
        }
        for name in _ARRAY_FIELDS:
            out[name] = _encode_array(getattr(self, name))
        if self.quality is not None:
            out["quality"] = _copy.deepcopy(dict(self.quality))
        if self.text is not None:
            out["text"] = self.text.to_dict()
        return out

    def to_json(self) -> bytes:
        """RFC 8785 canonical JSON bytes."""
        return canonical_json(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Explanation:
        if data.get("schema_version") != SCHEMA_VERSION:
            raise InvalidInputError("data.schema_version", f"must be {SCHEMA_VERSION!r}",
                                    data.get("schema_version"))
        arrays = {name: _decode_array(data[name]) for name in _ARRAY_FIELDS}
        names = data.get("feature_names")
        return cls(
            method=data["method"],
            output_space=data["output_space"],
            parameters=data["parameters"],
            library_versions=data["library_versions"],
            wall_time_s=float(data["wall_time_s"]),
            feature_names=tuple(names) if names is not None else None,
            seed=data.get("seed"),
            model=data.get("model"),
            quality=data.get("quality"),
            text=TextDetail.from_dict(data["text"]) if data.get("text") is not None else None,
            **arrays,  # type: ignore[arg-type]
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> Explanation:
        return cls.from_dict(canonical_loads(data))

    def __reduce__(self) -> Any:
        raise TypeError("Explanation is never pickled: use to_json() / from_json()")
