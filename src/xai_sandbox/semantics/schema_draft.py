"""The drafted schema and its commented YAML: what :func:`~xai_sandbox.semantics.drafting.
draft_schema` returns, and how it is written for the person who reviews it."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from xai_sandbox.models.schema import FeatureSchema

__all__ = ["FeatureNote", "ProxyNote", "SchemaDraft"]


@dataclass(frozen=True)
class ProxyNote:
    """A feature's measured association with a protected one (a likely proxy for it)."""

    protected: str
    value: float     # the bias-corrected Cramér's V
    p_value: float   # its permutation p-value

    def __str__(self) -> str:
        return (f"possible proxy for {self.protected} (Cramér's V {self.value:.2f}, "
                f"p={self.p_value:.3f})")


@dataclass(frozen=True)
class FeatureNote:
    """What the data said about one column, and what became of it.

    ``name`` is the feature's name in the draft (``None``: the column is excluded, and
    ``excluded`` says why); ``minimum``/``maximum`` are over the finite values of a numeric
    column; ``top`` holds the most frequent codes of a categorical one with their counts;
    ``protected_by`` the pattern its name matched; ``remarks`` what a person should know.
    """

    column: str
    name: str | None
    dtype: str
    kind: Literal["numeric", "categorical"] | None
    rows: int
    distinct: int
    missing: int
    infinite: int = 0
    minimum: float | None = None
    maximum: float | None = None
    top: tuple[tuple[str, int], ...] = ()
    protected_by: str | None = None
    proxies: tuple[ProxyNote, ...] = ()
    remarks: tuple[str, ...] = ()
    excluded: str | None = None


@dataclass(frozen=True)
class SchemaDraft:
    """A drafted schema: ``schema`` loads with ``FeatureSchema.from_dict``; ``notes`` hold
    one :class:`FeatureNote` per column of the data (the target's excepted), in its order.
    """

    schema: dict[str, Any]
    notes: tuple[FeatureNote, ...]
    rows: int
    target: str | None = None
    target_counts: tuple[tuple[str, int], ...] = ()
    association: str = ""

    @property
    def source_columns(self) -> dict[str, str]:
        """Feature name to the data column it was drafted from."""
        return {n.name: n.column for n in self.notes if n.name is not None}

    def feature_schema(self) -> FeatureSchema:
        return FeatureSchema.from_dict(self.schema)

    def to_yaml(self) -> str:
        """The draft as commented YAML; ``yaml.safe_load`` of it gives :attr:`schema`."""
        return _render(self)


# ---------------------------------------------------------------------- the YAML draft
_KEYS = (
    ("version", "the schema's name and revision (e.g. my-model/1), recorded with every "
                "decision"),
    ("name", "an identifier: the column name of a CSV or JSON row"),
    ("display", "the name a person reads, one text or {en: ..., zh: ...}; drafted as the "
                "data's column name"),
    ("kind", "numeric, or categorical (one of the listed codes, one one-hot column each)"),
    ("categories", "a categorical feature's codes as they appear in the data, most "
                   "frequent first"),
    ("bounds", "a numeric feature's [low, high]; values outside are refused. Drafted as "
               "the data's observed range: widen it to every value the model may be asked "
               "about"),
    ("unit", "a numeric feature's unit per locale: left for a person to write"),
    ("mutable", "whether the person can change it: false everywhere until a person "
                "decides"),
    ("monotone", "increasing or decreasing: the way a larger value is expected to move "
                 "the risk"),
    ("protected", "a protected characteristic: never given as a reason nor changed by a "
                  "counterfactual; drafted true only where the name suggests it"),
    ("reason_code", "the adverse-action code (a key of data/reasons/reg-b-form-c1.yaml, "
                    "e.g. C1-09) used when the feature weighed against the person"),
    ("order", "a categorical feature's codes from worse to better for the person"),
)


def _quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _number(value: float | None) -> str:
    return "none" if value is None else f"{value:.6g}"


def _comment(text: str, indent: str, lead: str = "", width: int = 96) -> list[str]:
    """``text`` as comment lines at ``indent``, each after ``lead``, continuation lines two
    spaces further in (whitespace in a column name, a newline say, cannot end a comment)."""
    words = " ".join(text.split()).split(" ")
    lines: list[str] = []
    line = ""
    for word in words:
        room = width - len(indent) - 2 - len(lead) - (2 if lines else 0)
        if line and len(line) + 1 + len(word) > room:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return [f"{indent}# {lead}{'  ' if i else ''}{x}".rstrip() for i, x in enumerate(lines)]


def _counted(pairs: Sequence[tuple[str, int]]) -> str:
    return ", ".join(f"{_quoted(code)} ({n})" for code, n in pairs)


def _header(draft: SchemaDraft) -> list[str]:
    out = _comment(f"DRAFT feature schema, inferred from {draft.rows} rows by xai-sandbox "
                   "schema infer (xai_sandbox.semantics.drafting.draft_schema). It is a "
                   "draft: a person reviews every feature and decides what the data cannot "
                   "say before a model is registered with it.", "")
    out += ["#", "# The keys (the format: src/xai_sandbox/data/schema/feature-schema.json):"]
    for key, meaning in _KEYS:
        out += _comment(f"{key}: {meaning}", "", "  ")
    out.append("#")
    if draft.target is not None:
        out += _comment(f"Target: column {_quoted(draft.target)}, excluded from the features; "
                        f"its values: {_counted(draft.target_counts[:20])}"
                        + (" ..." if len(draft.target_counts) > 20 else ""), "")
    named = [n for n in draft.notes if n.protected_by]
    out += _comment("Protected, suggested by name: " + (
        ", ".join(f"{n.name} (name matches {n.protected_by})" for n in named) if named
        else "none (a protected characteristic under another name must be marked by hand)"),
        "")
    out += _comment(f"Possible proxies: {draft.association}", "")
    renamed = [n for n in draft.notes if n.name is not None and n.name != n.column]
    if renamed:
        out += _comment("Renamed to identifiers (the schema has no key for a data column's "
                        "own name; schema check takes --column FEATURE=COLUMN): " + ", ".join(
                            f"{_quoted(n.column)} -> {n.name}" for n in renamed), "")
    excluded = [n for n in draft.notes if n.excluded]
    if excluded:
        out += _comment("Excluded columns: " + "; ".join(
            f"{_quoted(n.column)}: {n.excluded}" for n in excluded), "")
    missing = [n for n in draft.notes if n.name is not None and (n.missing or n.infinite)]
    if missing:
        out += _comment("Missing values: the schema cannot hold one, so these rows must be "
                        "imputed before they are scored: " + ", ".join(
                            f"{n.name} ({n.missing + n.infinite})" for n in missing), "")
    return out


def _feature_lines(note: FeatureNote, spec: Mapping[str, Any]) -> list[str]:
    out = ["", *_comment(f"{note.name}: column {_quoted(note.column)}, dtype {note.dtype}, "
                         f"{note.distinct} distinct of {note.rows} rows, {note.missing} "
                         "missing" + (f", {note.infinite} infinite" if note.infinite else ""),
                         "  ")]
    if note.kind == "numeric":
        out += _comment(f"observed range [{_number(note.minimum)}, {_number(note.maximum)}]: "
                        "the bounds below are the data's, widen them if needed", "  ")
    else:
        more = f" and {note.distinct - len(note.top)} more" if note.distinct > len(note.top) \
            else ""
        out += _comment(f"top: {_counted(note.top)}{more}", "  ")
    if note.protected_by:
        out += _comment(f"protected: suggested by name (it matches {note.protected_by}); "
                        "confirm or set false", "  ")
    for proxy in note.proxies:
        out += _comment(f"{proxy}: not marked protected; decide whether the model may use "
                        "it", "  ")
    for remark in note.remarks:
        out += _comment(remark, "  ")
    todo = ("display (en, zh), unit, monotone, reason_code, mutable" if note.kind == "numeric"
            else "display (en, zh) and each category's, order, reason_code, mutable")
    out += _comment(f"to decide: {todo}", "  ")
    body = yaml.safe_dump([dict(spec)], sort_keys=False, allow_unicode=True,
                          default_flow_style=None, width=96)
    out += ["  " + line for line in body.rstrip("\n").splitlines()]
    if note.kind == "numeric":
        out += ["    # unit: {en: ..., zh: ...}", "    # monotone: increasing | decreasing"]
    else:
        out.append("    # order: [worse, ..., better]")
    out.append("    # reason_code: C1-..")
    return out


def _render(draft: SchemaDraft) -> str:
    lines = _header(draft)
    lines += yaml.safe_dump({"version": draft.schema["version"]}, allow_unicode=True
                            ).rstrip("\n").splitlines()
    lines.append("features:")
    specs = iter(draft.schema["features"])
    for note in draft.notes:
        if note.name is None:
            lines += ["", *_comment(f"excluded: column {_quoted(note.column)} (dtype "
                                    f"{note.dtype}, {note.missing} missing): {note.excluded}",
                                    "  ")]
            if note.top:
                lines += _comment(f"top: {_counted(note.top)}", "  ")
            continue
        lines += _feature_lines(note, next(specs))
    return "\n".join(lines) + "\n"
