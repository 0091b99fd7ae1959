"""Decisions: validated, recorded with their personal payload (apart) and their log
entry, with a report or an explanation job in the same transaction; and their reads.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, select

import xai_sandbox.store.tables as t
from xai_sandbox.audit.canonical import canonical_json
from xai_sandbox.errors import InvalidInputError, NotFoundError
from xai_sandbox.store.entries import ENTRY_BUILDERS
from xai_sandbox.store.facets import DecisionFilter, decision_facets
from xai_sandbox.store.fields import check_text, utcnow
from xai_sandbox.store.jobs import enqueue
from xai_sandbox.store.reports import ReportRecords

__all__ = ["DecisionRecords", "PreparedDecision", "StoredDecision"]

# The subject view's reads, built once (the hot path of the service).
_DECISION_WITH_REPORT_SQL = (
    "SELECT d.id, d.case_ref, d.subject_ref, d.model_key, d.output_json, d.decided_at, "
    "(SELECT r.id FROM reports r WHERE r.decision_id = d.id ORDER BY r.created_at DESC "
    "LIMIT 1) AS report_id, "
    "(SELECT v.id FROM reviews v WHERE v.decision_id = d.id LIMIT 1) AS any_review "
    "FROM decisions d WHERE d.id = ?")
_REVIEWS_OF = (select(t.reviews).where(t.reviews.c.decision_id == bindparam("decision_id"))
               .order_by(t.reviews.c.requested_at))


@dataclass(frozen=True)
class StoredDecision:
    decision_id: str
    subject_ref: str
    leaf_index: int
    retain_until: datetime
    job_id: str | None = None   # the explanation job created with it, if any
    report_id: str | None = None  # the report recorded with it, if any


@dataclass(frozen=True)
class PreparedDecision:
    """A validated decision's rows, not yet written."""

    row: dict[str, Any]
    payload: dict[str, Any]



class DecisionRecords(ReportRecords):
    """The store's decisions (recording one can write its report, and so its review)."""

    def record_decision(self, *, model_key: str, subject_id: str, inputs: Mapping[str, Any],
                        output: Mapping[str, Any], policy_version: str,
                        case_ref: str | None = None,
                        decided_at: datetime | None = None) -> StoredDecision:
        """Record a decision, its personal payload (apart) and its log entry atomically.

        The log holds SHA-256(salt || canonical input) only; the salt and the input go to
        the deletable payload table.
        """
        return self.record_decisions([{
            "model_key": model_key, "subject_id": subject_id, "inputs": inputs,
            "output": output, "policy_version": policy_version, "case_ref": case_ref,
            "decided_at": decided_at}])[0]

    def record_decisions(self, items: Sequence[Mapping[str, Any]]) -> list[StoredDecision]:
        """Many decisions in one transaction (group commit: one fsync for the batch).

        Every item is validated before anything is written; either all are recorded or
        none. An item with ``explain_later`` (method names) gets an explanation job in the
        same transaction.
        """
        prepared = [self.prepare_decision(item, f"items[{n}]") for n, item in enumerate(items)]
        return self.record_prepared(prepared, jobs=[item.get("explain_later")
                                                    for item in items])

    def prepare_decision(self, item: Mapping[str, Any], where: str = "decision"
                         ) -> PreparedDecision:
        """Validate a decision and build its rows (id, commitment, times), writing nothing:
        a caller can explain it from these before :meth:`record_prepared` writes it."""
        row, payload = self._decision_rows(item, where)
        return PreparedDecision(row, payload)

    def record_prepared(self, prepared: Sequence[PreparedDecision], *,
                        reports: Sequence[Mapping[str, Any] | None] | None = None,
                        jobs: Sequence[Sequence[str] | None] | None = None,
                        report_schema: str = "xai-sandbox.report/1") -> list[StoredDecision]:
        """Write prepared decisions with, per decision, its report (already computed) or
        an explanation job (method names), all in one transaction."""
        if not prepared:
            return []
        reports = reports or [None] * len(prepared)
        jobs = jobs or [None] * len(prepared)
        rows = [p.row for p in prepared]
        with self.writer.begin() as conn:
            keys = {r["model_key"] for r in rows}
            known = set(conn.execute(select(t.models.c.key).where(t.models.c.key.in_(keys)))
                        .scalars())
            if keys - known:
                raise NotFoundError("model_key", "must be a registered model",
                                    sorted(keys - known)[0])
            conn.execute(insert(t.decisions), rows)
            conn.execute(insert(t.payloads), [p.payload for p in prepared])
            conn.execute(insert(t.decision_facets), [decision_facets(r) for r in rows])
            indexes = self.log.append(conn, [
                (f"decisions:{r['id']}", ENTRY_BUILDERS["decision_recorded"](r)) for r in rows])
            out = []
            for row, leaf, report, methods in zip(rows, indexes, reports, jobs, strict=True):
                report_id = job_id = None
                if report is not None:
                    report_id, _ = self.insert_report(conn, row["id"], report, report_schema)
                elif methods:
                    job_id = enqueue(conn, row["id"], methods)
                out.append(StoredDecision(row["id"], row["subject_ref"], leaf,
                                          row["retain_until"], job_id, report_id))
        return out

    def _decision_rows(self, item: Mapping[str, Any], where: str
                       ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The decision row and its payload row, validated."""
        if not isinstance(item, Mapping):
            raise InvalidInputError(where, "must be a mapping", type(item).__name__)
        inputs, output = item.get("inputs"), item.get("output")
        if not isinstance(inputs, Mapping) or not isinstance(output, Mapping):
            raise InvalidInputError(f"{where}.inputs", "inputs and output must be mappings",
                                    type(inputs).__name__)
        decision_id = item.get("decision_id") or str(uuid.uuid4())
        try:
            decision_id = str(uuid.UUID(str(decision_id)))
        except ValueError as exc:
            raise InvalidInputError(f"{where}.decision_id", "must be a UUID", decision_id
                                    ) from exc
        salt = secrets.token_bytes(32)
        payload = canonical_json(dict(inputs))
        when = item.get("decided_at") or utcnow()
        row: dict[str, Any] = {
            "id": decision_id,
            "case_ref": check_text("case_ref", item.get("case_ref") or decision_id),
            "subject_ref": self.subject_ref(item.get("subject_id")),  # type: ignore[arg-type]
            "model_key": check_text("model_key", item.get("model_key"), 260),
            "input_commitment": hashlib.sha256(salt + payload).hexdigest(),
            "output_json": canonical_json(dict(output)).decode(),
            "policy_version": check_text("policy_version", item.get("policy_version"), 64),
            "decided_at": when, "retain_until": self.retain_until(when), "legal_hold": False}
        return row, {"decision_id": decision_id, "salt": salt,
                     "payload_json": payload.decode()}

    def recorded(self, decision_ids: Sequence[str]) -> set[str]:
        """Those of ``decision_ids`` that are recorded decisions."""
        found: set[str] = set()
        ids = list(decision_ids)
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 500):
                found.update(conn.execute(select(t.decisions.c.id).where(
                    t.decisions.c.id.in_(ids[start : start + 500]))).scalars())
        return found

    def decision(self, decision_id: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.decisions).where(t.decisions.c.id == decision_id)
                               ).mappings().first()
        if row is None:
            raise NotFoundError("decision_id", "must be a recorded decision", decision_id)
        return dict(row)

    def payload(self, decision_id: str) -> dict[str, Any] | None:
        """The personal input of a decision, or ``None`` once erased."""
        with self.engine.connect() as conn:
            row = conn.execute(select(t.payloads).where(t.payloads.c.decision_id == decision_id)
                               ).first()
        return None if row is None else dict(json.loads(row.payload_json))

    def decision_with_report(self, decision_id: str
                             ) -> tuple[dict[str, Any], str | None, list[dict[str, Any]]]:
        """A decision's row, its newest report's id and its reviews: one query when it has
        no reviews (the common read), two when it has.

        The hot read of the service: plain SQL on the driver, no statement compiling or
        result processing (``decided_at`` comes back as the driver gives it: a string on
        SQLite, a datetime on PostgreSQL; :func:`rfc3339` takes either)."""
        with self.engine.connect() as conn:
            sql = _DECISION_WITH_REPORT_SQL
            if conn.dialect.paramstyle != "qmark":  # psycopg: format style
                sql = sql.replace("?", "%s")
            cur = conn.exec_driver_sql(sql, (decision_id,))
            found = cur.first()
            if found is None:
                raise NotFoundError("decision_id", "must be a recorded decision", decision_id)
            row = dict(zip(cur.keys(), found, strict=True))
            reviews = [] if row["any_review"] is None else [
                dict(r) for r in conn.execute(_REVIEWS_OF, {"decision_id": decision_id}
                                              ).mappings()]
        decision = {k: v for k, v in row.items() if k not in ("report_id", "any_review")}
        return decision, row["report_id"], reviews

    def decisions_of(self, subject_ref: str | None = None, *, model_key: str | None = None,
                     limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        """Decisions, newest first, of one subject and/or one model."""
        query = select(t.decisions).order_by(t.decisions.c.decided_at.desc(),
                                             t.decisions.c.id)
        if subject_ref is not None:
            query = query.where(t.decisions.c.subject_ref == subject_ref)
        if model_key is not None:
            query = query.where(t.decisions.c.model_key == model_key)
        with self.engine.connect() as conn:
            rows = conn.execute(query.limit(limit).offset(offset)).mappings().all()
        return [dict(r) for r in rows]

    def search_decisions(self, where: DecisionFilter | None = None, *, limit: int = 50,
                         offset: int = 0, count_cap: int = 10_000
                         ) -> tuple[list[dict[str, Any]], int, bool]:
        """Decisions narrowed by ``where``, newest first: (rows with their facets, how many
        match, whether that count stopped at ``count_cap``). One page and one bounded
        count, both on the facets' indexes."""
        if not 1 <= limit <= 500:
            raise InvalidInputError("limit", "must be 1 to 500", limit)
        if not 0 <= offset <= 10_000_000:
            raise InvalidInputError("offset", "must be 0 to 10,000,000", offset)
        f, d = t.decision_facets, t.decisions
        clauses = (where or DecisionFilter()).where()
        order = (f.c.decided_at.desc(), f.c.decision_id.desc())
        # The page's ids first, off the index alone (a deep offset skips index entries,
        # not joined rows), then their rows.
        ids = (select(f.c.decision_id).where(*clauses).order_by(*order).limit(limit)
               .offset(offset).subquery())
        page = (select(f, d.c.case_ref).join(ids, ids.c.decision_id == f.c.decision_id)
                .join(d, d.c.id == f.c.decision_id).order_by(*order))
        capped = select(f.c.decision_id).where(*clauses).limit(count_cap + 1).subquery()
        with self.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(page).mappings()]
            total = int(conn.execute(select(func.count()).select_from(capped)).scalar_one())
        return rows, min(total, count_cap), total > count_cap

