"""The report of one decision, as a typed value: built once, rendered to JSON, HTML and PDF.

A :class:`Report` has three parts. The *head* (``schema_version``, ``decision``, ``model``,
``output``) is always there. The *explained* part (explanations, reasons, counterfactuals,
reliability, quality, provenance, ...) is computed once when the decision is explained and
stored as canonical JSON; while it is pending, ``explanation_status`` says so instead. The
*record* part (reviews, requests, the access log, retention, the log receipt, monitoring)
is read live for a full report and never stored. The fields are those of COMPLIANCE.md.

A report reads as a mapping of its present sections (``report["reasons"]``), which is what
the templates and the JSON renderer consume; :meth:`Report.to_dict` is its JSON form and
:meth:`Report.from_dict` reads a stored body back, refusing one that lacks the head.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from xai_sandbox.errors import InvalidInputError

__all__ = ["EXPLAINED_FIELDS", "RECORD_FIELDS", "REPORT_SCHEMA", "Report"]

REPORT_SCHEMA = "xai-sandbox.report/1"

Section = Mapping[str, Any]

EXPLAINED_FIELDS = ("parties", "input", "explanations", "reasons", "counterfactuals",
                    "reliability", "quality", "regimes", "provenance", "fairness",
                    "review_required", "anchors", "subject_text", "notices")
"""The sections computed once, when the decision is explained (stored)."""
RECORD_FIELDS = ("report", "final_outcome", "human_review", "requests", "access_log",
                 "retention", "receipt", "monitoring")
"""The sections of a full report read live from the record (never stored)."""
_NULLABLE = frozenset({"report"})   # a full report of a pending decision: "report": null


@dataclass(frozen=True, eq=False)
class Report(Mapping[str, Any]):
    """One decision's report. ``None`` marks a section this report does not carry."""

    decision: Section
    model: Section
    output: Section
    schema_version: str = REPORT_SCHEMA
    explanation_status: str | None = None
    # Computed once, when explained.
    parties: Section | None = None
    input: Section | None = None
    explanations: Sequence[Section] | None = None
    reasons: Section | None = None
    counterfactuals: Section | None = None
    reliability: Section | None = None
    quality: Section | None = None
    regimes: Sequence[str] | None = None
    provenance: Sequence[Section] | None = None
    fairness: Section | None = None
    review_required: Section | None = None
    anchors: Section | None = None
    subject_text: Section | None = None
    notices: Section | None = None
    # Read live, for a full report.
    report: Section | None = None
    final_outcome: Section | None = None
    human_review: Section | None = None
    requests: Sequence[Section] | None = None
    access_log: Sequence[Section] | None = None
    retention: Section | None = None
    receipt: Section | None = None
    monitoring: Section | None = None
    full: bool = dataclasses.field(default=False, compare=False)

    @property
    def explained(self) -> bool:
        """Whether the explained part is there (not pending)."""
        return self.explanations is not None

    def stored(self) -> Report:
        """The part that is stored: the head and the explained sections."""
        keep = {f: getattr(self, f) for f in ("decision", "model", "output", "schema_version",
                                               "explanation_status", *EXPLAINED_FIELDS)}
        return Report(**keep)

    def with_record(self, **record: Any) -> Report:
        """This report with the live record's sections (a full report)."""
        unknown = sorted(set(record) - set(RECORD_FIELDS) - {"decision", "regimes"})
        if unknown:
            raise InvalidInputError("record", f"must name sections of {list(RECORD_FIELDS)}",
                                    unknown)
        return dataclasses.replace(self, **record, full=True)

    # ---------------------------------------------------------------- the JSON form
    def _present(self) -> Iterator[str]:
        for f in dataclasses.fields(self):
            if f.name == "full":
                continue
            value = getattr(self, f.name)
            if value is not None or (self.full and f.name in _NULLABLE):
                yield f.name

    def to_dict(self) -> dict[str, Any]:
        """The report's JSON form (what is stored, served and rendered)."""
        return {name: _plain(getattr(self, name)) for name in self._present()}

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> Report:
        """A stored or served report body back as a :class:`Report`."""
        if isinstance(body, Report):
            return body
        if not isinstance(body, Mapping):
            raise InvalidInputError("report", "must be a mapping", type(body).__name__)
        names = {f.name for f in dataclasses.fields(cls)} - {"full"}
        unknown = sorted(set(body) - names)
        if unknown:
            raise InvalidInputError("report", f"has sections no {REPORT_SCHEMA} report has",
                                    unknown)
        missing = [k for k in ("decision", "model", "output") if k not in body]
        if missing:
            raise InvalidInputError("report", "must carry decision, model and output", missing)
        version = body.get("schema_version", REPORT_SCHEMA)
        if version != REPORT_SCHEMA:
            raise InvalidInputError("report.schema_version", f"must be {REPORT_SCHEMA!r}",
                                    version)
        return cls(**dict(body), full=any(k in body for k in RECORD_FIELDS))

    # ---------------------------------------------------------------- Mapping
    def __eq__(self, other: object) -> bool:
        """Equal reports have the same JSON form."""
        if not isinstance(other, Mapping):
            return NotImplemented
        return bool(self.to_dict() == _plain(other))

    __hash__ = None  # type: ignore[assignment]  # sections are mutable mappings

    def __getitem__(self, key: str) -> Any:
        if key not in self._present():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return self._present()

    def __len__(self) -> int:
        return sum(1 for _ in self._present())


def _plain(value: Any) -> Any:
    """Tuples as lists, mappings as dicts: the JSON form of a section."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
