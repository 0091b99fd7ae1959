"""Ranked factor tables of tabular explanations, for the terminal and for JSON files."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.table import Table

from xai_sandbox.errors import InvalidInputError
from xai_sandbox.explainers.explanation import Explanation
from xai_sandbox.models.schema import FeatureSchema

__all__ = ["factor_rows", "factor_table"]


def factor_rows(schema: FeatureSchema, row: Mapping[str, Any],
                explanations: Mapping[str, Explanation], *, rank_by: str,
                locale: str = "en", index: int = 0) -> list[dict[str, Any]]:
    """One record per feature, ranked by |attribution| of ``rank_by``, with every method's
    value side by side."""
    if rank_by not in explanations:
        raise InvalidInputError("rank_by", f"must be one of {sorted(explanations)}", rank_by)
    for label, e in explanations.items():
        if e.feature_names != schema.names:
            raise InvalidInputError("explanations", "must be grouped by the schema's features",
                                    label)
    lead = explanations[rank_by]
    out = []
    for rank, (name, _) in enumerate(lead.ranked(index), start=1):
        j = schema.names.index(name)
        spec = schema.feature(name)
        out.append({
            "rank": rank,
            "feature": name,
            "display": spec.display.get(locale, name),
            "value": row[name],
            "value_display": schema.display_value(name, row[name], locale, with_code=True),
            "protected": spec.protected,
            "reason_code": spec.reason_code,
            "attributions": {label: float(e.values[index, j])
                             for label, e in explanations.items()},
        })
    return out


def factor_table(rows: Sequence[Mapping[str, Any]], methods: Sequence[str], *, title: str,
                 limit: int = 10) -> Table:
    """A rich table of the top ``limit`` factors."""
    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("factor")
    table.add_column("applicant's value")
    for m in methods:
        table.add_column(m, justify="right")
    for rec in rows[:limit]:
        flag = " [protected]" if rec["protected"] else ""
        cells = [f"{rec['attributions'][m]:+.3f}" for m in methods]
        table.add_row(str(rec["rank"]), rec["display"] + flag, rec["value_display"], *cells)
    return table
