"""Semantic anchors: what the model relied on, in business and legal words.

An anchor names a concept ("sex and marital status", "the ID number's last four digits",
"hedging words such as 'possibly'"), says what it covers in the input (tabular features,
image boxes, text phrases), which rules govern it, and a declarative risk rule. Anchor
libraries are YAML, versioned and validated; nothing in a file is ever evaluated as code:
a risk rule is one of three fixed forms.

Alignment aggregates an explanation's attribution onto each anchor: its *sensitivity* is the
anchor's share of the absolute attribution (in [0, 1]); its *confidence* is how far the
methods (or seeds) given agree on that share (1 - the range of their shares; ``None`` from a
single explanation); its *risk* is the rule's score in [0, 1], and it is a *hit* when the
risk reaches the anchor's threshold (default 0.85).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from xai_sandbox.errors import InvalidInputError, SchemaError
from xai_sandbox.explainers.explanation import Explanation
from xai_sandbox.models.schema import LOCALES, FeatureSchema, checked_mapping, versioned_items

__all__ = ["Anchor", "AnchorLibrary", "AnchorMatch", "RiskRule", "align", "align_text",
           "load_anchors", "region_mask"]

DEFAULT_THRESHOLD = 0.85
_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
RuleKind = Literal["share", "value", "compare"]


def _err(path: str, rule: str, value: Any) -> SchemaError:
    return SchemaError(path, rule, value)


def _labels(raw: Any, path: str) -> dict[str, str]:
    if not isinstance(raw, Mapping) or not all(
            isinstance(raw.get(loc), str) and raw.get(loc) for loc in LOCALES):
        raise _err(path, f"must give a non-empty text for every locale {list(LOCALES)}", raw)
    return {str(k): str(v) for k, v in raw.items()}


@dataclass(frozen=True)
class RiskRule:
    """One of three declarative forms, each scoring in [0, 1]:

    - ``share``: the anchor's share of the attribution, scaled so that ``at`` scores 1
      (``{kind: share, at: 0.3}``: a 30 % share or more is full risk);
    - ``value``: 1 when an input feature meets a condition, else 0
      (``{kind: value, feature: savings, equals: A65}``; or ``above`` / ``below``);
    - ``compare``: the anchor's share against another anchor's, 1 when it is ``ratio``
      times as large or more (``{kind: compare, anchor: background, ratio: 2}``).
    """

    kind: RuleKind
    at: float = 1.0
    feature: str | None = None
    op: Literal["equals", "above", "below"] | None = None
    operand: Any = None
    anchor: str | None = None
    ratio: float = 1.0

    @classmethod
    def from_dict(cls, raw: Any, path: str) -> RiskRule:
        if raw is None:
            return cls(kind="share")
        if not isinstance(raw, Mapping):
            raise _err(path, "must be a mapping with a 'kind'", raw)
        kind = raw.get("kind")
        allowed = {"share": {"kind", "at"}, "value": {"kind", "feature", "equals", "above",
                                                      "below"},
                   "compare": {"kind", "anchor", "ratio"}}
        if kind not in allowed:
            raise _err(f"{path}.kind", "must be 'share', 'value' or 'compare'", kind)
        unknown = sorted(set(raw) - allowed[kind])
        if unknown:
            raise _err(path, f"a {kind} rule takes only {sorted(allowed[kind])}", unknown)
        if kind == "share":
            at = raw.get("at", 1.0)
            if isinstance(at, bool) or not isinstance(at, int | float) or not 0 < at <= 1:
                raise _err(f"{path}.at", "must be a number in (0, 1]", at)
            return cls(kind="share", at=float(at))
        if kind == "value":
            ops = [op for op in ("equals", "above", "below") if op in raw]
            if len(ops) != 1 or not isinstance(raw.get("feature"), str):
                raise _err(path, "a value rule names one feature and one of equals, above, "
                           "below", dict(raw))
            operand = raw[ops[0]]
            if ops[0] != "equals" and (isinstance(operand, bool) or
                                       not isinstance(operand, int | float)):
                raise _err(f"{path}.{ops[0]}", "must be a number", operand)
            return cls(kind="value", feature=raw["feature"], op=ops[0],  # type: ignore[arg-type]
                       operand=operand)
        ratio = raw.get("ratio", 1.0)
        if not isinstance(raw.get("anchor"), str):
            raise _err(f"{path}.anchor", "must name another anchor", raw.get("anchor"))
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or ratio <= 0:
            raise _err(f"{path}.ratio", "must be a positive number", ratio)
        return cls(kind="compare", anchor=raw["anchor"], ratio=float(ratio))

    def score(self, share: float, shares: Mapping[str, float],
              row: Mapping[str, Any] | None) -> float:
        if self.kind == "share":
            return float(min(1.0, share / self.at))
        if self.kind == "value":
            if row is None or self.feature is None or self.feature not in row:
                return 0.0
            value = row[self.feature]
            if self.op == "equals":
                return float(value == self.operand)
            number = float(value)
            return float(number > self.operand if self.op == "above" else number < self.operand)
        other = shares.get(self.anchor or "", 0.0)
        if other <= 0:
            return 1.0 if share > 0 else 0.0
        return float(min(1.0, share / (self.ratio * other)))

    def describe(self) -> str:
        if self.kind == "share":
            return f"share of attribution >= {self.at:.0%}"
        if self.kind == "value":
            return f"{self.feature} {self.op} {self.operand}"
        return f"share >= {self.ratio:g} x share of anchor {self.anchor}"


@dataclass(frozen=True)
class Anchor:
    """A business concept, what it covers in the input, and the rules that govern it."""

    id: str
    label: Mapping[str, str]
    features: tuple[str, ...] = ()                          # tabular
    boxes: tuple[tuple[float, float, float, float], ...] = ()  # images: x0, y0, x1, y1
    polygons: tuple[tuple[tuple[float, float], ...], ...] = ()  # images: masks as outlines
    phrases: tuple[str, ...] = ()                           # text (case-insensitive)
    regulations: tuple[str, ...] = ()
    rule: RiskRule = field(default_factory=lambda: RiskRule(kind="share"))
    threshold: float = DEFAULT_THRESHOLD
    reason_code: str | None = None
    protected: bool = False

    @classmethod
    def from_dict(cls, raw: Any, path: str) -> Anchor:
        raw = checked_mapping(raw, path, {"id", "label", "covers", "regulations", "risk",
                                          "threshold", "reason_code", "protected"})
        anchor_id = raw.get("id")
        if not isinstance(anchor_id, str) or not _ID.match(anchor_id):
            raise _err(f"{path}.id", "must be 1-64 of a-z, 0-9, '.', '_', '-'", anchor_id)
        covers = raw.get("covers")
        if not isinstance(covers, Mapping) or not covers or set(covers) - {
                "features", "boxes", "polygons", "phrases"}:
            raise _err(f"{path}.covers", "must give features, boxes, polygons or phrases",
                       covers)
        features = covers.get("features", [])
        if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
            raise _err(f"{path}.covers.features", "must be a list of feature names", features)
        boxes = []
        for n, box in enumerate(covers.get("boxes", [])):
            if (not isinstance(box, list) or len(box) != 4 or
                    not all(isinstance(v, int | float) and not isinstance(v, bool)
                            for v in box) or box[0] >= box[2] or box[1] >= box[3]):
                raise _err(f"{path}.covers.boxes[{n}]", "must be [x0, y0, x1, y1] with "
                           "x0 < x1 and y0 < y1 (input pixels)", box)
            boxes.append(tuple(float(v) for v in box))
        polygons = []
        for n, poly in enumerate(covers.get("polygons", [])):
            if (not isinstance(poly, list) or len(poly) < 3 or not all(
                    isinstance(p, list) and len(p) == 2 and all(
                        isinstance(v, int | float) and not isinstance(v, bool) for v in p)
                    for p in poly)):
                raise _err(f"{path}.covers.polygons[{n}]", "must be a list of at least "
                           "three [x, y] points (input pixels)", poly)
            polygons.append(tuple((float(x), float(y)) for x, y in poly))
        phrases = covers.get("phrases", [])
        if not isinstance(phrases, list) or not all(isinstance(p, str) and p.strip()
                                                    for p in phrases):
            raise _err(f"{path}.covers.phrases", "must be a list of non-empty phrases", phrases)
        regulations = raw.get("regulations", [])
        if not isinstance(regulations, list) or not all(isinstance(r, str) and r
                                                        for r in regulations):
            raise _err(f"{path}.regulations", "must be a list of references", regulations)
        threshold = raw.get("threshold", DEFAULT_THRESHOLD)
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not (
                0 < threshold <= 1):
            raise _err(f"{path}.threshold", "must be a number in (0, 1]", threshold)
        code = raw.get("reason_code")
        if code is not None and not isinstance(code, str):
            raise _err(f"{path}.reason_code", "must be a string", code)
        if not isinstance(raw.get("protected", False), bool):
            raise _err(f"{path}.protected", "must be true or false", raw.get("protected"))
        return cls(id=anchor_id, label=_labels(raw.get("label"), f"{path}.label"),
                   features=tuple(features), boxes=tuple(boxes),  # type: ignore[arg-type]
                   polygons=tuple(polygons),
                   phrases=tuple(p.lower() for p in phrases), regulations=tuple(regulations),
                   rule=RiskRule.from_dict(raw.get("risk"), f"{path}.risk"),
                   threshold=float(threshold), reason_code=code,
                   protected=raw.get("protected", False))


@dataclass(frozen=True)
class AnchorLibrary:
    version: str
    anchors: tuple[Anchor, ...]

    @classmethod
    def from_dict(cls, raw: Any) -> AnchorLibrary:
        version, items = versioned_items(raw, "anchors", "anchors")
        anchors = tuple(Anchor.from_dict(a, f"anchors[{n}]") for n, a in enumerate(items))
        ids = [a.id for a in anchors]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise _err("anchors", "ids must be unique", dupes)
        for n, a in enumerate(anchors):
            if a.rule.kind == "compare" and a.rule.anchor not in ids:
                raise _err(f"anchors[{n}].risk.anchor", f"must name an anchor of {ids}",
                           a.rule.anchor)
        return cls(version=version, anchors=anchors)

    def check_schema(self, schema: FeatureSchema) -> None:
        """Every feature an anchor or a value rule names must be in ``schema``."""
        names = set(schema.names)
        for n, a in enumerate(self.anchors):
            missing = sorted(set(a.features) - names)
            if a.rule.kind == "value" and a.rule.feature not in names:
                missing.append(str(a.rule.feature))
            if missing:
                raise _err(f"anchors[{n}].covers.features", f"must be features of schema "
                           f"{schema.version}", missing)

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "anchors": [a.id for a in self.anchors],
                "thresholds": {a.id: a.threshold for a in self.anchors}}

    def with_thresholds(self, thresholds: Mapping[str, float]) -> AnchorLibrary:
        """The same library with calibrated thresholds where given."""
        return AnchorLibrary(version=self.version, anchors=tuple(
            dataclasses.replace(a, threshold=thresholds.get(a.id, a.threshold))
            for a in self.anchors))


@functools.lru_cache(maxsize=8)
def _shipped(name: str) -> AnchorLibrary:
    path = resources.files("xai_sandbox").joinpath("data", "anchors", f"{name}.yaml")
    if not path.is_file():
        raise InvalidInputError("anchors", "must be a shipped anchor library or a file", name)
    return AnchorLibrary.from_dict(yaml.safe_load(path.read_text(encoding="utf-8")))


def load_anchors(source: str | Path | Mapping[str, Any]) -> AnchorLibrary:
    """An anchor library: a shipped one by name, a YAML file, or a mapping. ``yaml.safe_load``
    only: a file can hold data, never code."""
    if isinstance(source, Mapping):
        return AnchorLibrary.from_dict(source)
    path = Path(source)
    if path.suffix in (".yaml", ".yml", ".json") and path.is_file():
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:  # a python/* tag, or broken YAML
            raise _err(str(path), "must be plain YAML data (no tags that build objects)",
                       str(exc).splitlines()[0]) from exc
        return AnchorLibrary.from_dict(raw)
    return _shipped(str(source))


@dataclass(frozen=True)
class AnchorMatch:
    anchor: str
    label: Mapping[str, str]
    sensitivity: float
    confidence: float | None
    risk: float
    hit: bool
    regulations: tuple[str, ...]
    rule: str
    reason_code: str | None
    protected: bool
    covers: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"anchor": self.anchor, "label": dict(self.label),
                "sensitivity": self.sensitivity, "confidence": self.confidence,
                "risk": self.risk, "hit": self.hit, "regulations": list(self.regulations),
                "rule": self.rule, "reason_code": self.reason_code,
                "protected": self.protected, "covers": list(self.covers)}


def region_mask(anchor: Anchor, shape: tuple[int, ...]) -> np.ndarray:
    """The (H, W) pixels an image anchor covers: its boxes and the inside of its polygons
    (pixel centres)."""
    h, w = shape[-2], shape[-1]
    mask = np.zeros((h, w), dtype=bool)
    for x0, y0, x1, y1 in anchor.boxes:
        mask[max(0, int(y0)):min(h, int(np.ceil(y1))),
             max(0, int(x0)):min(w, int(np.ceil(x1)))] = True
    if anchor.polygons:
        from matplotlib.path import Path as Outline

        ys, xs = np.mgrid[0:h, 0:w]
        centres = np.column_stack([xs.ravel() + 0.5, ys.ravel() + 0.5])
        for poly in anchor.polygons:
            mask |= Outline(poly).contains_points(centres).reshape(h, w)
    return mask


def _mass(values: np.ndarray, flat: list[float] | None, position: Mapping[str, int],
          anchor: Anchor, tokens: Sequence[str] | None) -> float:
    """Absolute attribution inside the anchor's cover (``values``: one row, absolute;
    ``flat``/``position``: the same as a list and the feature positions, for features)."""
    if anchor.features:
        if flat is None:
            return 0.0
        return float(sum(flat[position[f]] for f in anchor.features if f in position))
    if anchor.boxes or anchor.polygons:
        plane = values.sum(axis=0) if values.ndim == 3 else values
        return float(plane[region_mask(anchor, plane.shape)].sum())
    if anchor.phrases and tokens is not None:
        per_token = (values.reshape(len(tokens), -1).sum(axis=1)
                     if values.size != len(tokens) else values.reshape(-1))
        words = [t.lower().lstrip("#▁Ġ ") for t in tokens]
        total = 0.0
        for phrase in anchor.phrases:
            parts = phrase.split()
            for start in range(len(words) - len(parts) + 1):
                if words[start:start + len(parts)] == parts:
                    total += float(per_token[start:start + len(parts)].sum())
        return total
    return 0.0


def align(explanations: Explanation | Sequence[Explanation], library: AnchorLibrary, *,
          row: Mapping[str, Any] | None = None, tokens: Sequence[str] | None = None,
          index: int = 0) -> list[AnchorMatch]:
    """Each anchor's sensitivity, confidence, risk and hit for row ``index``.

    Several explanations (methods or seeds) of the same input are averaged; their spread
    gives the confidence. ``row`` (feature values) feeds value rules; ``tokens`` lets
    phrase anchors match text.
    """
    runs = [explanations] if isinstance(explanations, Explanation) else list(explanations)
    if not runs:
        raise InvalidInputError("explanations", "must hold at least one explanation", runs)
    per_run: list[dict[str, float]] = []
    for e in runs:
        values = np.abs(np.asarray(e.values[index], dtype=np.float64))
        total = float(values.sum())
        names = e.feature_names or ()
        flat = values.reshape(-1).tolist() if names else None
        position = {n: i for i, n in enumerate(names)}
        per_run.append({a.id: (_mass(values, flat, position, a, tokens) / total
                               if total > 0 else 0.0) for a in library.anchors})
    shares = {a.id: sum(r[a.id] for r in per_run) / len(per_run) for a in library.anchors}
    out = []
    for a in library.anchors:
        spread = [r[a.id] for r in per_run]
        confidence = None if len(runs) < 2 else float(max(0.0, 1.0 - (max(spread) -
                                                                         min(spread))))
        risk = a.rule.score(shares[a.id], shares, row)
        out.append(AnchorMatch(
            anchor=a.id, label=a.label, sensitivity=shares[a.id], confidence=confidence,
            risk=risk, hit=risk >= a.threshold, regulations=a.regulations,
            rule=a.rule.describe(), reason_code=a.reason_code, protected=a.protected,
            covers=a.features or tuple(f"box {list(b)}" for b in a.boxes) + tuple(
                f"polygon of {len(p)} points" for p in a.polygons) or a.phrases))
    return sorted(out, key=lambda m: -m.sensitivity)


_PUNCT = re.compile(r"^[\W_]+|[\W_]+$")


def align_text(explanation: Explanation, library: AnchorLibrary, row: int = 0
               ) -> list[AnchorMatch]:
    """Anchor matches of one explained text, phrase by phrase over its words."""
    found = explanation.parameters.get("words")
    if not isinstance(found, list) or row >= len(found):
        raise InvalidInputError("explanation", "must be a token attribution with words "
                                "(xai_sandbox.text.attribution)", explanation.method)
    per_word = found[row] if found and isinstance(found[0], list) else found
    scores = np.asarray([[w["score"] for w in per_word]], dtype=np.float64)
    texts = [_PUNCT.sub("", str(w["text"])).lower() for w in per_word]
    words_only = dataclasses.replace(explanation, values=scores, feature_names=None,
                         target=explanation.target[row:row + 1],
                         prediction=explanation.prediction[row:row + 1],
                         delta=None, expected_value=None, baseline=None)
    return align(words_only, library, tokens=texts)
