"""Feature schemas: what each column of a tabular model means.

A schema names every feature with display names per locale, says whether it is numeric or
categorical (with its categories), its unit and bounds, whether the person can change it,
the direction its effect is expected to take, whether it is protected, and the reason code
used when it is a principal reason for a decision. It loads from YAML or JSON, validates
itself with errors that name the offending path, and encodes rows into the model's columns
(one-hot for categoricals), keeping the columns of one feature together as a group.

Two optional parts describe models that are not fed the raw values directly. A numeric
feature's ``encoding: {center, scale}`` says the model reads ``(x - center) / scale``
(a network trained on standardised inputs): :meth:`FeatureSchema.encode` keeps raw units
and :meth:`FeatureSchema.model_transform` gives the affine map that
:mod:`xai_sandbox.models.pipeline` applies in front of the model. Top-level ``groups``
declare features that are explained together (``employment``: job and employment
length): the players of feature-level methods are then the groups plus every ungrouped
feature (:meth:`FeatureSchema.players`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from xai_sandbox.errors import SchemaError

__all__ = ["LOCALES", "Category", "FeatureGroup", "FeatureSchema", "FeatureSpec"]

LOCALES = ("en", "zh")
Kind = Literal["numeric", "categorical"]
Monotone = Literal["increasing", "decreasing"]
_FEATURE_KEYS = {"name", "display", "kind", "categories", "unit", "bounds", "mutable",
                 "monotone", "protected", "reason_code", "favourable", "order", "description",
                 "encoding"}
_CATEGORY_KEYS = {"code", "display", "reason_code"}
_ENCODING_KEYS = {"center", "scale"}
_GROUP_KEYS = {"name", "display", "features", "description"}


def checked_mapping(raw: Any, path: str, allowed: frozenset[str] | set[str] | None,
                    rule: str = "must be a mapping") -> Mapping[str, Any]:
    """``raw`` as a mapping whose keys are all in ``allowed`` (any keys when None)."""
    if not isinstance(raw, Mapping):
        raise SchemaError(path, rule, raw)
    unknown = sorted(set(raw) - set(allowed)) if allowed is not None else []
    if unknown:
        raise SchemaError(path, f"unknown keys (allowed: {sorted(allowed or ())})", unknown)
    return raw


def identifier(raw: Mapping[str, Any], path: str) -> str:
    """The mapping's ``name``, which must be a Python identifier."""
    name = raw.get("name")
    if not isinstance(name, str) or not name.isidentifier():
        raise SchemaError(f"{path}.name", "must be an identifier (letters, digits, _)", name)
    return name


def versioned_items(raw: Any, root: str, key: str) -> tuple[str, Sequence[Any]]:
    """The ``version`` and the non-empty list under ``key`` of a versioned document."""
    if not isinstance(raw, Mapping):
        raise SchemaError(root, f"must be a mapping with 'version' and '{key}'", raw)
    version = raw.get("version")
    if not isinstance(version, str) or not version:
        raise SchemaError(f"{root}.version", "must be a non-empty string", version)
    items = raw.get(key)
    if not isinstance(items, Sequence) or isinstance(items, str) or not items:
        raise SchemaError(f"{root}.{key}", "must be a non-empty list", items)
    return version, items


def _display(raw: Any, path: str, fallback: str) -> dict[str, str]:
    if raw is None:
        return {locale: fallback for locale in LOCALES}
    if isinstance(raw, str):
        return {locale: raw for locale in LOCALES}
    if not isinstance(raw, Mapping):
        raise SchemaError(path, "must be a mapping of locale to text", raw)
    missing = [loc for loc in LOCALES if not isinstance(raw.get(loc), str) or not raw.get(loc)]
    if missing:
        raise SchemaError(path, f"needs a non-empty text for every locale {list(LOCALES)}",
                          raw)
    extra = sorted(str(k) for k in set(raw) - set(LOCALES))
    if extra:
        # An unquoted comma in a YAML flow mapping ({en: a, b, zh: c}) lands here.
        raise SchemaError(path, f"only the locales {list(LOCALES)} (quote a text that holds "
                          "a comma)", extra)
    return {str(k): str(v) for k, v in raw.items()}


@dataclass(frozen=True)
class Category:
    """One category of a categorical feature. ``reason_code``, when the schema gives the key
    for this category, replaces the feature's adverse-action code for this value; ``None``
    there means no catalogue text fits the value (it is then an "Other" reason)."""

    code: str
    display: Mapping[str, str]
    reason_code: str | None = None
    own_code: bool = False   # the category gives its own reason_code (possibly None)


@dataclass(frozen=True)
class FeatureSpec:
    """One feature of a tabular model."""

    name: str
    kind: Kind
    display: Mapping[str, str]
    categories: tuple[Category, ...] = ()
    unit: Mapping[str, str] | None = None   # per locale; a plain string is every locale's
    bounds: tuple[float, float] | None = None
    mutable: bool = False
    monotone: Monotone | None = None
    protected: bool = False
    reason_code: str | None = None   # the adverse-action code (catalogue key, e.g. C1-09)
    favourable: Mapping[str, str] | None = None   # said when the factor helped, per locale
    order: tuple[str, ...] = ()   # categorical: codes from worse to better for the person
    description: str | None = None
    # numeric: the model reads (x - center) / scale; None: the raw value
    encoding: tuple[float, float] | None = None

    @property
    def columns(self) -> tuple[str, ...]:
        if self.kind == "numeric":
            return (self.name,)
        return tuple(f"{self.name}={c.code}" for c in self.categories)

    def category_codes(self) -> tuple[str, ...]:
        return tuple(c.code for c in self.categories)

    def category(self, code: Any) -> Category | None:
        return next((c for c in self.categories if c.code == code), None)

    def compare(self, value: Any, reference: Any) -> Literal["better", "worse", "same"] | None:
        """Whether ``value`` is better or worse for the person than ``reference``, by the
        schema's own words: ``monotone`` for numbers (``increasing``: a larger value raises
        the risk), ``order`` for categories. ``None`` when the schema does not say."""
        if self.kind == "numeric":
            if self.monotone is None:
                return None
            a, b = float(value), float(reference)
            if a == b:
                return "same"
            riskier = a > b if self.monotone == "increasing" else a < b
            return "worse" if riskier else "better"
        if value == reference:
            return "same"
        if value not in self.order or reference not in self.order:
            return None
        return "better" if self.order.index(value) > self.order.index(reference) else "worse"

    def adverse_code(self, value: Any, reference: Any = None) -> str | None:
        """The adverse-action code that truthfully describes ``value`` as a reason against
        the person, or ``None`` (then only an "Other" reason, naming the factor, fits).

        A category's own code wins; a category at the best end of ``order`` never gets one
        (it cannot be a shortcoming); a value that is, by ``monotone`` or ``order``, better
        than the reference the attribution is measured against gets none either (the code's
        text would say something about the person that their own value contradicts)."""
        if self.protected:
            return None
        code = self.reason_code
        if self.kind == "categorical":
            cat = self.category(value)
            if cat is not None and cat.own_code:
                code = cat.reason_code
            elif self.order and value == self.order[-1]:
                return None
        if code is not None and reference is not None and \
                self.compare(value, reference) == "better":
            return None
        return code

    @classmethod
    def from_dict(cls, raw: Any, path: str) -> FeatureSpec:
        raw = checked_mapping(raw, path, _FEATURE_KEYS)
        name = identifier(raw, path)
        kind = raw.get("kind")
        if kind not in ("numeric", "categorical"):
            raise SchemaError(f"{path}.kind", "must be 'numeric' or 'categorical'", kind)
        categories: tuple[Category, ...] = ()
        bounds = None
        if kind == "categorical":
            raw_cats = raw.get("categories")
            if not isinstance(raw_cats, Sequence) or isinstance(raw_cats, str) or not raw_cats:
                raise SchemaError(f"{path}.categories",
                                  "a categorical feature needs a non-empty list", raw_cats)
            cats = []
            for j, item in enumerate(raw_cats):
                cpath = f"{path}.categories[{j}]"
                code = item.get("code") if isinstance(item, Mapping) else item
                if not isinstance(code, str) or not code:
                    raise SchemaError(cpath, "needs a non-empty string code", item)
                if isinstance(item, Mapping) and set(item) - _CATEGORY_KEYS:
                    raise SchemaError(cpath, f"unknown keys (allowed: {sorted(_CATEGORY_KEYS)})",
                                      sorted(set(item) - _CATEGORY_KEYS))
                shown = item.get("display") if isinstance(item, Mapping) else None
                own = isinstance(item, Mapping) and "reason_code" in item
                own_code = item.get("reason_code") if own else None
                if own_code is not None and not isinstance(own_code, str):
                    raise SchemaError(f"{cpath}.reason_code", "must be a string or null",
                                      own_code)
                cats.append(Category(code, _display(shown, f"{cpath}.display", code),
                                     reason_code=own_code, own_code=own))
            codes = [c.code for c in cats]
            if len(set(codes)) != len(codes):
                raise SchemaError(f"{path}.categories", "codes must be unique", codes)
            categories = tuple(cats)
            if raw.get("bounds") is not None:
                raise SchemaError(f"{path}.bounds", "only numeric features have bounds",
                                  raw.get("bounds"))
        elif raw.get("bounds") is not None:
            b = raw["bounds"]
            ok = (isinstance(b, Sequence) and len(b) == 2
                  and all(isinstance(v, int | float) and math.isfinite(v) for v in b))
            if not ok or b[0] > b[1]:
                raise SchemaError(f"{path}.bounds", "must be [low, high] finite with low <= high",
                                  b)
            bounds = (float(b[0]), float(b[1]))
        order = raw.get("order") or ()
        if order:
            codes = [c.code for c in categories]
            if (kind != "categorical" or isinstance(order, str) or not isinstance(order, Sequence)
                    or len(set(order)) != len(order) or not set(order) <= set(codes)):
                raise SchemaError(f"{path}.order", "a categorical feature's distinct category "
                                  f"codes from worse to better, among {codes}", order)
        monotone = raw.get("monotone")
        if monotone not in (None, "increasing", "decreasing"):
            raise SchemaError(f"{path}.monotone", "must be 'increasing', 'decreasing' or null",
                              monotone)
        for flag in ("mutable", "protected"):
            if not isinstance(raw.get(flag, False), bool):
                raise SchemaError(f"{path}.{flag}", "must be true or false", raw.get(flag))
        for text in ("reason_code", "description"):
            if raw.get(text) is not None and not isinstance(raw.get(text), str):
                raise SchemaError(f"{path}.{text}", "must be a string", raw.get(text))
        encoding = _encoding(raw.get("encoding"), f"{path}.encoding", kind)
        unit = None if raw.get("unit") is None else _display(raw["unit"], f"{path}.unit", "")
        favourable = (None if raw.get("favourable") is None
                      else _display(raw["favourable"], f"{path}.favourable", ""))
        return cls(name=name, kind=kind, display=_display(raw.get("display"), f"{path}.display",
                                                          name),
                   categories=categories, unit=unit, bounds=bounds,
                   mutable=raw.get("mutable", False), monotone=monotone,
                   protected=raw.get("protected", False), reason_code=raw.get("reason_code"),
                   favourable=favourable, order=tuple(order),
                   description=raw.get("description"), encoding=encoding)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind,
                               "display": dict(self.display), "mutable": self.mutable,
                               "protected": self.protected}
        if self.categories:
            out["categories"] = [{"code": c.code, "display": dict(c.display),
                                  **({"reason_code": c.reason_code} if c.own_code else {})}
                                 for c in self.categories]
        if self.order:
            out["order"] = list(self.order)
        if self.favourable is not None:
            out["favourable"] = dict(self.favourable)
        for key in ("monotone", "reason_code", "description"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.unit is not None:
            out["unit"] = dict(self.unit)
        if self.bounds is not None:
            out["bounds"] = list(self.bounds)
        if self.encoding is not None:
            out["encoding"] = {"center": self.encoding[0], "scale": self.encoding[1]}
        return out


def _encoding(raw: Any, path: str, kind: Any) -> tuple[float, float] | None:
    """A numeric feature's ``{center, scale}``: the model reads (x - center) / scale."""
    if raw is None:
        return None
    if kind != "numeric":
        raise SchemaError(path, "only numeric features have an encoding (categorical "
                          "features are one-hot columns)", raw)
    if not isinstance(raw, Mapping) or set(raw) != _ENCODING_KEYS:
        raise SchemaError(path, "must be a mapping with exactly 'center' and 'scale'", raw)
    center, scale = raw["center"], raw["scale"]
    for key, value in (("center", center), ("scale", scale)):
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value):
            raise SchemaError(f"{path}.{key}", "must be a finite number", value)
    if not scale > 0:
        raise SchemaError(f"{path}.scale", "must be greater than 0", scale)
    return float(center), float(scale)


@dataclass(frozen=True)
class FeatureGroup:
    """Features explained together as one player (``employment``: job and length of
    employment). Its features keep their own values, reasons and display names; the group's
    name never appears where a feature's would."""

    name: str
    display: Mapping[str, str]
    features: tuple[str, ...]
    description: str | None = None

    @classmethod
    def from_dict(cls, raw: Any, path: str, names: Sequence[str]) -> FeatureGroup:
        raw = checked_mapping(raw, path, _GROUP_KEYS,
                              "must be a mapping with 'name' and 'features'")
        name = identifier(raw, path)
        if name in names:
            raise SchemaError(f"{path}.name", "must not be the name of a feature", name)
        members = raw.get("features")
        if isinstance(members, str) or not isinstance(members, Sequence) or len(members) < 2:
            raise SchemaError(f"{path}.features", "must list at least two features", members)
        strange = [m for m in members if m not in names]
        if strange:
            raise SchemaError(f"{path}.features", f"must name features of the schema "
                              f"{list(names)}", strange)
        if len(set(members)) != len(members):
            raise SchemaError(f"{path}.features", "must name each feature once", members)
        description = raw.get("description")
        if description is not None and not isinstance(description, str):
            raise SchemaError(f"{path}.description", "must be a string", description)
        return cls(name=name, display=_display(raw.get("display"), f"{path}.display", name),
                   features=tuple(str(m) for m in members), description=description)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "display": dict(self.display),
                               "features": list(self.features)}
        if self.description is not None:
            out["description"] = self.description
        return out


@dataclass(frozen=True)
class FeatureSchema:
    """The ordered features of a tabular model and how they map to its input columns.

    ``feature_groups`` are the declared groups of features explained together (the
    top-level ``groups`` key); ``groups`` is the column indices of each feature.
    """

    version: str
    features: tuple[FeatureSpec, ...]
    feature_groups: tuple[FeatureGroup, ...] = ()
    _index: Mapping[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {f.name: i for i, f in enumerate(self.features)})

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_dict(cls, raw: Any) -> FeatureSchema:
        version, feats = versioned_items(raw, "schema", "features")
        specs = tuple(FeatureSpec.from_dict(f, f"schema.features[{i}]")
                      for i, f in enumerate(feats))
        names = [s.name for s in specs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise SchemaError("schema.features", "feature names must be unique", dupes)
        return cls(version=version, features=specs,
                   feature_groups=_groups(raw.get("groups"), names))

    @classmethod
    def load(cls, path: str | Path) -> FeatureSchema:
        """Load a schema from a ``.yaml``/``.yml`` or ``.json`` file."""
        p = Path(path)
        if p.suffix not in (".yaml", ".yml", ".json"):
            raise SchemaError("path", "must end in .yaml, .yml or .json", str(p))
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise SchemaError("path", f"must be a readable file ({exc.strerror})", str(p)) from exc
        try:
            raw = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as exc:
            raise SchemaError("path", f"must hold valid {p.suffix[1:].upper()} ({exc})",
                              str(p)) from exc
        return cls.from_dict(raw)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": self.version,
                               "features": [f.to_dict() for f in self.features]}
        if self.feature_groups:
            out["groups"] = [g.to_dict() for g in self.feature_groups]
        return out

    # ------------------------------------------------------------------ structure
    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(c for f in self.features for c in f.columns)

    @property
    def groups(self) -> tuple[tuple[int, ...], ...]:
        """Column indices of each feature, in feature order (one-hot columns together)."""
        out, start = [], 0
        for f in self.features:
            n = len(f.columns)
            out.append(tuple(range(start, start + n)))
            start += n
        return tuple(out)

    def players(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """The players of a feature-level method: each declared group (at the place of its
        first feature) and every ungrouped feature, as (name, its features)."""
        owner = {f: g for g in self.feature_groups for f in g.features}
        out: list[tuple[str, tuple[str, ...]]] = []
        placed: set[str] = set()
        for name in self.names:
            group = owner.get(name)
            if group is None:
                out.append((name, (name,)))
            elif group.name not in placed:
                placed.add(group.name)
                out.append((group.name, group.features))
        return tuple(out)

    def player_groups(self) -> dict[str, list[str]]:
        """:meth:`players` as the ``groups=`` mapping of :func:`xai_sandbox.explainers.explain`
        (every feature once)."""
        return {name: list(members) for name, members in self.players()}

    def declared_groups(self) -> dict[str, list[str]]:
        """The declared groups only, name -> features (ungrouped features left out)."""
        return {g.name: list(g.features) for g in self.feature_groups}

    def model_transform(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(centers, scales)`` per encoded column: the model reads
        ``(X - centers) / scales``; one-hot columns pass unchanged (0, 1). ``None`` when no
        feature declares an ``encoding``."""
        if all(f.encoding is None for f in self.features):
            return None
        centers = np.zeros(len(self.columns))
        scales = np.ones(len(self.columns))
        for spec, cols in zip(self.features, self.groups, strict=True):
            if spec.encoding is not None:
                centers[cols[0]], scales[cols[0]] = spec.encoding
        return centers, scales

    def feature(self, name: str) -> FeatureSpec:
        if name not in self._index:
            raise SchemaError("name", f"must be a feature of the schema {list(self.names)}",
                              name)
        return self.features[self._index[name]]

    def display_name(self, name: str, locale: str = "en") -> str:
        if locale not in LOCALES:
            raise SchemaError("locale", f"must be one of {list(LOCALES)}", locale)
        return self.feature(name).display.get(locale, name)

    def display_value(self, name: str, value: Any, locale: str = "en",
                      with_code: bool = False) -> str:
        """A value as a person reads it: the category's display name (optionally with its
        code), or the number with its unit."""
        spec = self.feature(name)
        if spec.kind == "categorical":
            for cat in spec.categories:
                if cat.code == value:
                    shown = cat.display.get(locale, cat.code)
                    return f"{shown} ({cat.code})" if with_code else shown
            return str(value)
        number = f"{float(value):g}"
        unit = spec.unit.get(locale, "") if spec.unit else ""
        return f"{number} {unit}" if unit else number

    # ------------------------------------------------------------------ rows
    def encode(self, rows: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> np.ndarray:
        """Validate rows (feature name -> value) and encode them as model columns.

        Raises
        ------
        SchemaError
            Naming the row and feature, for a missing or unknown feature, an unknown
            category, a value that is not a finite number, or one outside the bounds.
        """
        if isinstance(rows, Mapping):
            rows = [rows]
        out = np.zeros((len(rows), len(self.columns)), dtype=np.float64)
        for r, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise SchemaError(f"rows[{r}]", "must be a mapping of feature name to value",
                                  row)
            unknown = sorted(set(row) - set(self.names))
            if unknown:
                raise SchemaError(f"rows[{r}]", f"unknown features (known: {list(self.names)})",
                                  unknown)
            col = 0
            for spec in self.features:
                path = f"rows[{r}].{spec.name}"
                if spec.name not in row:
                    raise SchemaError(path, "is required", None)
                value = row[spec.name]
                if spec.kind == "categorical":
                    codes = spec.category_codes()
                    if not isinstance(value, str) or value not in codes:
                        raise SchemaError(path, f"must be one of the categories {list(codes)}",
                                          value)
                    out[r, col + codes.index(value)] = 1.0
                    col += len(codes)
                    continue
                number = _as_number(value, path)
                if spec.bounds is not None and not spec.bounds[0] <= number <= spec.bounds[1]:
                    raise SchemaError(path, f"must lie within the bounds {list(spec.bounds)}",
                                      value)
                out[r, col] = number
                col += 1
        return out

    def decode(self, X: np.ndarray) -> list[dict[str, Any]]:
        """Turn encoded columns back into rows (the largest one-hot column wins)."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.columns):
            raise SchemaError("X", f"must have shape (rows, {len(self.columns)})", X.shape)
        rows = []
        for x in X:
            row: dict[str, Any] = {}
            for spec, cols in zip(self.features, self.groups, strict=True):
                if spec.kind == "numeric":
                    row[spec.name] = float(x[cols[0]])
                else:
                    row[spec.name] = spec.categories[int(np.argmax(x[list(cols)]))].code
            rows.append(row)
        return rows

    def reference_row(self, X: np.ndarray) -> np.ndarray:
        """A typical, valid row of ``X``: numeric medians and categorical modes."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.columns) or X.shape[0] == 0:
            raise SchemaError("X", f"must have shape (rows >= 1, {len(self.columns)})", X.shape)
        ref = np.zeros(X.shape[1])
        for spec, cols in zip(self.features, self.groups, strict=True):
            if spec.kind == "numeric":
                ref[cols[0]] = np.median(X[:, cols[0]])
            else:
                ref[cols[0] + int(np.argmax(X[:, list(cols)].sum(axis=0)))] = 1.0
        return ref


def _groups(raw: Any, names: Sequence[str]) -> tuple[FeatureGroup, ...]:
    """The top-level ``groups``: each feature in at most one, names unique and apart from
    the features'."""
    if raw is None:
        return ()
    if isinstance(raw, str) or not isinstance(raw, Sequence):
        raise SchemaError("schema.groups", "must be a list of groups", raw)
    groups = tuple(FeatureGroup.from_dict(g, f"schema.groups[{i}]", names)
                   for i, g in enumerate(raw))
    seen: dict[str, str] = {}
    for i, group in enumerate(groups):
        if any(g.name == group.name for g in groups[:i]):
            raise SchemaError(f"schema.groups[{i}].name", "group names must be unique",
                              group.name)
        twice = [f for f in group.features if f in seen]
        if twice:
            raise SchemaError(f"schema.groups[{i}].features", "a feature belongs to at most "
                              f"one group ({twice[0]} is in {seen[twice[0]]})", twice)
        seen.update({f: group.name for f in group.features})
    return groups


def _as_number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise SchemaError(path, "must be a number", value)
    number = float(value)
    if not math.isfinite(number):
        raise SchemaError(path, "must be finite (no NaN or infinity)", value)
    return number
