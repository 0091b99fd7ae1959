"""The durable store: decisions, payloads, reports, reviews, access events and alerts,
each written together with its audit-log entry in one transaction.

SQLite (the default, a file created on first use) runs in WAL mode with
``synchronous=FULL``, so an acknowledged write is on disk; its transactions begin
IMMEDIATE so writers from several processes queue instead of failing. PostgreSQL is used
by URL (``postgresql+psycopg://...``). Alembic migrates either to the current schema on
open.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)

from xai_sandbox.audit.canonical import canonical_json
from xai_sandbox.audit.log import AuditLog, Receipt
from xai_sandbox.audit.notes import KeyStore
from xai_sandbox.errors import ConflictError, InvalidInputError, NotFoundError
from xai_sandbox.settings import Settings
from xai_sandbox.store import tables as t
from xai_sandbox.store.entries import ENTRY_BUILDERS
from xai_sandbox.store.jobs import enqueue

__all__ = ["RELIABILITY_LEVELS", "REVIEW_KINDS", "REVIEW_OUTCOMES", "REVIEW_STATES",
           "DecisionFilter", "PreparedDecision", "Store", "StoredDecision", "report_facets"]

REVIEW_OUTCOMES = ("confirmed", "overridden", "reversed")
REVIEW_KINDS = ("human_review", "contest", "explanation")
REVIEW_STATES = ("none", "pending", *REVIEW_OUTCOMES)
RELIABILITY_LEVELS = ("normal", "low", "withheld")
_ID_TEXT = 128


# The subject view's reads, built once (the hot path of the service).
_DECISION_WITH_REPORT_SQL = (
    "SELECT d.id, d.case_ref, d.subject_ref, d.model_key, d.output_json, d.decided_at, "
    "(SELECT r.id FROM reports r WHERE r.decision_id = d.id ORDER BY r.created_at DESC "
    "LIMIT 1) AS report_id, "
    "(SELECT v.id FROM reviews v WHERE v.decision_id = d.id LIMIT 1) AS any_review "
    "FROM decisions d WHERE d.id = ?")
_REVIEWS_OF = (select(t.reviews).where(t.reviews.c.decision_id == bindparam("decision_id"))
               .order_by(t.reviews.c.requested_at))


def make_engine(url: str) -> Engine:
    """An engine with the durability settings this store relies on."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        engine = create_engine(url, connect_args={"timeout": 60, "isolation_level": None})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        # Writers of this process queue on a lock of their own before taking SQLite's:
        # SQLite's busy handler waits by sleeping in growing steps (up to 100 ms), so
        # threads that met a held lock there would wait far longer than the write takes.
        writing = threading.Lock()

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            # Writers take the write lock up front, so concurrent writers queue instead of
            # deadlocking on a lock upgrade; readers begin deferred and never block them.
            if not conn.get_execution_options().get("xai_write", False):
                conn.exec_driver_sql("BEGIN")
                return
            if conn.info.get("xai_writing"):  # a second transaction on this connection
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                return
            writing.acquire()
            conn.info["xai_writing"] = True
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            except BaseException:
                conn.info.pop("xai_writing", None)
                writing.release()
                raise

        @event.listens_for(engine, "checkin")
        def _end(_dbapi_conn: Any, record: Any) -> None:
            # After the commit (or rollback) has returned and the connection is back.
            if record.info.pop("xai_writing", False):
                writing.release()

        return engine
    if url.startswith(("postgresql", "postgres")):
        return create_engine(url, pool_pre_ping=True)
    raise InvalidInputError("database_url", "must be a sqlite:/// or postgresql+psycopg:// URL",
                            url.split("@")[-1])


def writer(engine: Engine) -> Engine:
    """The same engine (and pool) for write transactions: ``with writer(e).begin()``."""
    return engine.execution_options(xai_write=True)


def migrate(engine: Engine) -> None:
    """Bring the database to the current schema with Alembic."""
    cfg = Config()
    cfg.set_main_option("script_location",
                        str(resources.files("xai_sandbox.store").joinpath("migrations")))
    with writer(engine).begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def _now() -> datetime:
    return datetime.now(UTC)


def _text(name: str, value: Any, limit: int = _ID_TEXT) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise InvalidInputError(name, f"must be a non-empty string of at most {limit} "
                                "characters", value)
    return value


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


def _decision_facets(row: Mapping[str, Any]) -> dict[str, Any]:
    output = json.loads(row["output_json"])
    return {"decision_id": row["id"], "model_key": row["model_key"],
            "decided_at": row["decided_at"], "outcome": str(output.get("decision"))[:64],
            "adverse": bool(output.get("adverse")), "anchor_hits": None, "reliability": None,
            "review_status": "none"}


def report_facets(report: Mapping[str, Any]) -> dict[str, Any]:
    """The search facets a report sets: anchor hits and reliability (``withheld`` when the
    explanation may not be shown). Migration 0004 keeps a frozen copy of this rule."""
    reliability = report.get("reliability") or {}
    level = ("withheld" if reliability.get("shown") is False
             else reliability.get("level") or "normal")
    return {"anchor_hits": len((report.get("anchors") or {}).get("hits") or []),
            "reliability": level}


@dataclass(frozen=True)
class DecisionFilter:
    """What the decisions list is narrowed to (``None``: any). Dates are inclusive from
    ``since`` and exclusive at ``until``; ``anchor_hit`` True keeps decisions with at
    least one anchor hit, False those explained with none."""

    model_key: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    outcome: str | None = None
    anchor_hit: bool | None = None
    reliability: str | None = None
    review_status: str | None = None

    def __post_init__(self) -> None:
        for name, allowed in (("reliability", RELIABILITY_LEVELS),
                              ("review_status", REVIEW_STATES)):
            value = getattr(self, name)
            if value is not None and value not in allowed:
                raise InvalidInputError(name, f"must be one of {list(allowed)}", value)
        for name in ("model_key", "outcome"):
            value = getattr(self, name)
            if value is not None:
                _text(name, value, 260)
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise InvalidInputError("since", f"must be before until ({self.until})",
                                    self.since)

    def where(self) -> list[Any]:
        f = t.decision_facets.c
        clauses: list[Any] = []
        for column, value in ((f.model_key, self.model_key), (f.outcome, self.outcome),
                              (f.reliability, self.reliability),
                              (f.review_status, self.review_status)):
            if value is not None:
                clauses.append(column == value)
        if self.since is not None:
            clauses.append(f.decided_at >= self.since)
        if self.until is not None:
            clauses.append(f.decided_at < self.until)
        if self.anchor_hit is True:
            clauses.append(f.anchor_hits > 0)
        elif self.anchor_hit is False:
            clauses.append(f.anchor_hits == 0)
        return clauses


class Store:
    """Records and their audit log in one database.

    Parameters
    ----------
    settings:
        Where the database and keys live, the log's origin and the retention periods.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.engine = make_engine(self.settings.resolved_database_url())
        self.writer = writer(self.engine)
        migrate(self.engine)
        key_path = self.settings.resolved_signing_key()
        self.keys = KeyStore(key_path, self.settings.log_origin.replace(" ", "_"))
        self.log = AuditLog(self.engine, self.keys, self.settings.log_origin,
                            writer=self.writer)
        self._pepper_path = key_path.with_name("subject-pepper.bin")

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------ helpers
    def subject_ref(self, subject_id: str) -> str:
        """The pseudonymous reference of a subject: HMAC-SHA256 with a secret pepper."""
        _text("subject_id", subject_id, 256)
        return hmac.new(self._pepper(), subject_id.encode(), hashlib.sha256).hexdigest()

    def _pepper(self) -> bytes:
        path = self._pepper_path
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                return path.read_bytes()
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_bytes(32))
                fh.flush()
                os.fsync(fh.fileno())
        return path.read_bytes()

    def retain_until(self, start: datetime) -> datetime:
        """The longest retention period that applies, from ``start``."""
        return start + timedelta(days=max(self.settings.retention_days().values()))

    def _record(self, conn: Connection, table: Any, row: dict[str, Any], kind: str,
                key: str = "id") -> int:
        conn.execute(insert(table).values(**row))
        entry = ENTRY_BUILDERS[kind](row)
        return self.log.append(conn, [(f"{table.name}:{row[key]}", entry)])[0]

    # ------------------------------------------------------------------ models
    def register_model(self, model_id: str, version: str, fingerprint: str,
                       schema: Mapping[str, Any] | None = None,
                       spec: Mapping[str, Any] | None = None) -> tuple[str, int]:
        """Record a model; returns its key ``id@version`` and the leaf index.

        ``spec`` says how to load the model again (a built-in name or a model text) and
        carries its explanation policy; it is stored as canonical JSON and committed to by
        its hash in the log.
        """
        _text("model_id", model_id)
        _text("version", version)
        if not isinstance(fingerprint, str) or len(fingerprint) != 64:
            raise InvalidInputError("fingerprint", "must be a SHA-256 hex digest", fingerprint)
        key = f"{model_id}@{version}"
        row = {"key": key, "model_id": model_id, "version": version, "fingerprint": fingerprint,
               "schema_json": canonical_json(schema).decode() if schema is not None else None,
               "registered_at": _now(),
               "spec_json": canonical_json(dict(spec)).decode() if spec is not None else None}
        with self.writer.begin() as conn:
            existing = conn.execute(select(t.models.c.fingerprint)
                                    .where(t.models.c.key == key)).scalar()
            if existing is not None:
                if existing != fingerprint:
                    raise ConflictError("version", "is registered with another "
                                            "fingerprint; register a new version", key)
                idx = conn.execute(select(t.log_entries.c.idx).where(
                    t.log_entries.c.record_id == f"models:{key}")).scalar_one()
                return key, int(idx)
            return key, self._record(conn, t.models, row, "model_registered", key="key")

    def models(self) -> list[dict[str, Any]]:
        """Every registered model, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.models).order_by(t.models.c.registered_at))
            return [dict(r) for r in rows.mappings()]

    # ------------------------------------------------------------------ decisions
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
            conn.execute(insert(t.decision_facets), [_decision_facets(r) for r in rows])
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
        when = item.get("decided_at") or _now()
        row: dict[str, Any] = {
            "id": decision_id,
            "case_ref": _text("case_ref", item.get("case_ref") or decision_id),
            "subject_ref": self.subject_ref(item.get("subject_id")),  # type: ignore[arg-type]
            "model_key": _text("model_key", item.get("model_key"), 260),
            "input_commitment": hashlib.sha256(salt + payload).hexdigest(),
            "output_json": canonical_json(dict(output)).decode(),
            "policy_version": _text("policy_version", item.get("policy_version"), 64),
            "decided_at": when, "retain_until": self.retain_until(when), "legal_hold": False}
        return row, {"decision_id": decision_id, "salt": salt,
                     "payload_json": payload.decode()}

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

    # ------------------------------------------------------------------ reports, access
    def record_report(self, decision_id: str, report: Mapping[str, Any],
                      schema_version: str) -> tuple[str, int]:
        """Store an explanation report as canonical JSON; returns (report id, leaf)."""
        with self.writer.begin() as conn:
            return self.insert_report(conn, decision_id, report, schema_version)

    def insert_report(self, conn: Connection, decision_id: str, report: Mapping[str, Any],
                      schema_version: str) -> tuple[str, int]:
        """:meth:`record_report` inside the caller's write transaction."""
        body = canonical_json(dict(report))
        row: dict[str, Any] = {"id": str(uuid.uuid4()), "decision_id": decision_id,
               "schema_version": _text("schema_version", schema_version, 64), "body": body,
               "sha256": hashlib.sha256(body).hexdigest(), "created_at": _now()}
        self._require_decision(conn, decision_id)
        leaf = self._record(conn, t.reports, row, "explanation_generated")
        conn.execute(update(t.decision_facets).where(
            t.decision_facets.c.decision_id == decision_id).values(**report_facets(report)))
        required = report.get("review_required")
        if required:
            # A report that may not be shown opens its human review in the same transaction.
            self._insert_review(conn, decision_id, required["requested_by"],
                                required["reason"], kind=required["kind"],
                                channel=required["channel"],
                                due_at=datetime.fromisoformat(required["due_at"]),
                                exists_ok=True)
        return row["id"], leaf

    def latest_report(self, decision_id: str) -> dict[str, Any] | None:
        """The newest report of a decision: its row (body parsed) or ``None``."""
        with self.engine.connect() as conn:
            row = conn.execute(select(t.reports).where(t.reports.c.decision_id == decision_id)
                               .order_by(t.reports.c.created_at.desc()).limit(1)
                               ).mappings().first()
        if row is None:
            return None
        return {**dict(row), "body": json.loads(bytes(row["body"]))}

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

    def recent_reports(self, model_key: str, n: int) -> list[tuple[str, dict[str, Any]]]:
        """The ``n`` newest reports of a model, oldest first: (decision id, body)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.reports.c.decision_id, t.reports.c.body).join(
                t.decisions, t.decisions.c.id == t.reports.c.decision_id).where(
                t.decisions.c.model_key == model_key)
                .order_by(t.reports.c.created_at.desc()).limit(n)).all()
        return [(r.decision_id, dict(json.loads(bytes(r.body)))) for r in reversed(rows)]

    def report_body(self, report_id: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            body = conn.execute(select(t.reports.c.body).where(t.reports.c.id == report_id)
                                ).scalar()
        if body is None:
            raise NotFoundError("report_id", "must be a stored report", report_id)
        return dict(json.loads(bytes(body)))

    def leaf_of(self, record_id: str, conn: Connection | None = None) -> int:
        """The leaf index of the first log entry of a record ('table:id')."""
        query = select(t.log_entries.c.idx).where(
            t.log_entries.c.record_id == record_id).order_by(t.log_entries.c.idx).limit(1)
        if conn is not None:
            idx = conn.execute(query).scalar()
        else:
            with self.engine.connect() as own:
                idx = own.execute(query).scalar()
        if idx is None:
            raise InvalidInputError("record_id", "must have a log entry", record_id)
        return int(idx)

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

    def record_adhoc(self, *, model_key: str, actor: str, method: str, input_commitment: str,
                     explanation_sha256: str) -> tuple[str, int]:
        """Log an ad hoc explanation by the hashes of its input and result."""
        row: dict[str, Any] = {
               "id": str(uuid.uuid4()), "model_key": _text("model_key", model_key, 260),
               "actor": _text("actor", actor), "method": _text("method", method, 64),
               "input_commitment": input_commitment,
               "explanation_sha256": explanation_sha256, "created_at": _now()}
        with self.writer.begin() as conn:
            return row["id"], self._record(conn, t.adhoc_explanations, row,
                                           "adhoc_explanation")

    def record_access(self, *, record_type: str, record_id: str, action: str, actor: str,
                      role: str, purpose: str) -> int:
        """Log that someone read or exported a record."""
        return self.record_accesses([{"record_type": record_type, "record_id": record_id,
                                      "action": action, "actor": actor, "role": role,
                                      "purpose": purpose}])[0]

    def record_accesses(self, events: Sequence[Mapping[str, Any]]) -> list[int]:
        """Many access events in one transaction (one fsync); returns their leaves."""
        rows = []
        for ev in events:
            action = ev.get("action")
            if action not in ("read", "export"):
                raise InvalidInputError("action", "must be 'read' or 'export'", action)
            rows.append({"id": str(uuid.uuid4()),
                         "record_type": _text("record_type", ev.get("record_type"), 40),
                         "record_id": _text("record_id", ev.get("record_id"), 80),
                         "action": action, "actor": _text("actor", ev.get("actor")),
                         "role": _text("role", ev.get("role"), 64),
                         "purpose": _text("purpose", ev.get("purpose"), 200), "at": _now()})
        if not rows:
            return []
        with self.writer.begin() as conn:
            conn.execute(insert(t.access_events), rows)
            return self.log.append(conn, [
                (f"access_events:{r['id']}", ENTRY_BUILDERS["record_accessed"](r))
                for r in rows])

    def accesses_of(self, record_id: str, limit: int = 200) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.access_events).where(
                t.access_events.c.record_id == record_id)
                .order_by(t.access_events.c.at.desc()).limit(limit)).mappings().all()
        return [dict(r) for r in rows]

    # ------------------------------------------------------------------ reviews, alerts
    def request_review(self, decision_id: str, requested_by: str, reason: str, *,
                       kind: str = "human_review", channel: str = "api",
                       due_at: datetime | None = None) -> tuple[str, int]:
        """A human review, contest or explanation request of a decision (GDPR Art. 22(3),
        PIPL Art. 24); returns (review id, leaf)."""
        with self.writer.begin() as conn:
            self._require_decision(conn, decision_id)
            found = self._insert_review(conn, decision_id, requested_by, reason, kind=kind,
                                        channel=channel, due_at=due_at)
        return found

    def _insert_review(self, conn: Connection, decision_id: str, requested_by: str,
                       reason: str, *, kind: str, channel: str, due_at: datetime | None,
                       exists_ok: bool = False) -> tuple[str, int]:
        """:meth:`request_review` inside the caller's transaction. A pending request of the
        same kind is a conflict, or (``exists_ok``) the answer: (its id, its leaf)."""
        if kind not in REVIEW_KINDS:
            raise InvalidInputError("kind", f"must be one of {list(REVIEW_KINDS)}", kind)
        row: dict[str, Any] = {"id": str(uuid.uuid4()), "decision_id": decision_id,
               "requested_by": _text("requested_by", requested_by),
               "reason": _text("reason", reason, 4000), "requested_at": _now(),
               "status": "pending", "reviewer": None, "reviewer_role": None,
               "rationale": None, "decided_at": None, "kind": kind,
               "channel": _text("channel", channel, 20), "due_at": due_at}
        open_ = conn.execute(select(t.reviews.c.id).where(
            t.reviews.c.decision_id == decision_id, t.reviews.c.status == "pending",
            t.reviews.c.kind == kind)).first()
        if open_ is not None:
            if exists_ok:
                return str(open_.id), self.leaf_of(f"reviews:{open_.id}", conn)
            raise ConflictError("decision_id", f"already has a pending {kind} request",
                                decision_id)
        leaf = self._record(conn, t.reviews, row, "review_requested")
        conn.execute(update(t.decision_facets).where(
            t.decision_facets.c.decision_id == decision_id).values(review_status="pending"))
        return row["id"], leaf

    def review(self, review_id: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.reviews).where(t.reviews.c.id == review_id)
                               ).mappings().first()
            if row is None:
                raise NotFoundError("review_id", "must be a requested review", review_id)
            steps = conn.execute(select(t.review_events).where(
                t.review_events.c.review_id == review_id).order_by(t.review_events.c.at)
            ).mappings().all()
        return {**dict(row), "steps": [dict(s) for s in steps]}

    def reviews_of(self, decision_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.reviews).where(t.reviews.c.decision_id == decision_id)
                                .order_by(t.reviews.c.requested_at)).mappings().all()
        return [dict(r) for r in rows]

    def review_queue(self, *, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        """Pending requests, the earliest due first, with who holds each."""
        claims = (select(t.review_events.c.actor).where(
            t.review_events.c.review_id == t.reviews.c.id)
            .order_by(t.review_events.c.at.desc()).limit(1).scalar_subquery())
        last_action = (select(t.review_events.c.action).where(
            t.review_events.c.review_id == t.reviews.c.id)
            .order_by(t.review_events.c.at.desc()).limit(1).scalar_subquery())
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.reviews, claims.label("holder"), last_action.label("last_action"))
                .where(t.reviews.c.status == "pending")
                .order_by(t.reviews.c.due_at, t.reviews.c.requested_at)
                .limit(limit).offset(offset)).mappings().all()
        return [{**{k: v for k, v in r.items() if k not in ("holder", "last_action")},
                 "claimed_by": r["holder"] if r["last_action"] == "claimed" else None}
                for r in rows]

    def claim_review(self, review_id: str, *, reviewer: str, role: str,
                     release: bool = False) -> int:
        """Claim a pending request for ``reviewer`` (or release it); one holder at a time."""
        with self.writer.begin() as conn:
            row, holder = self._pending_review(conn, review_id)
            if release:
                if holder != reviewer:
                    raise ConflictError("review_id", "is not claimed by you", review_id)
            elif holder is not None and holder != reviewer:
                raise ConflictError("review_id", f"is claimed by {holder}", review_id)
            event = {"id": str(uuid.uuid4()), "review_id": review_id,
                     "decision_id": row["decision_id"],
                     "action": "released" if release else "claimed",
                     "actor": _text("reviewer", reviewer), "role": _text("role", role, 64),
                     "at": _now()}
            return self._record(conn, t.review_events, event, "review_step")

    @staticmethod
    def _pending_review(conn: Connection, review_id: str
                        ) -> tuple[dict[str, Any], str | None]:
        """A pending review's row and who holds it (``None``: nobody), or the error."""
        row = conn.execute(select(t.reviews).where(t.reviews.c.id == review_id)
                           ).mappings().first()
        if row is None:
            raise NotFoundError("review_id", "must be a requested review", review_id)
        if row["status"] != "pending":
            raise ConflictError("review_id", "is already decided", review_id)
        last = conn.execute(select(t.review_events.c.action, t.review_events.c.actor).where(
            t.review_events.c.review_id == review_id)
            .order_by(t.review_events.c.at.desc()).limit(1)).first()
        holder = str(last.actor) if last is not None and last.action == "claimed" else None
        return dict(row), holder

    def decide_review(self, review_id: str, *, outcome: str, reviewer: str, role: str,
                      rationale: str) -> int:
        if outcome not in REVIEW_OUTCOMES:
            raise InvalidInputError("outcome", f"must be one of {list(REVIEW_OUTCOMES)}",
                                    outcome)
        with self.writer.begin() as conn:
            row, holder = self._pending_review(conn, review_id)
            if holder is not None and holder != reviewer:
                raise ConflictError("review_id", f"is claimed by {holder}", review_id)
            values = {"status": outcome, "reviewer": _text("reviewer", reviewer),
                      "reviewer_role": _text("role", role, 64),
                      "rationale": _text("rationale", rationale, 4000), "decided_at": _now()}
            done = conn.execute(update(t.reviews).where(
                t.reviews.c.id == review_id, t.reviews.c.status == "pending").values(**values))
            if done.rowcount != 1:  # pragma: no cover - the write lock makes this a race loss
                raise ConflictError("review_id", "is already decided", review_id)
            conn.execute(update(t.decision_facets).where(
                t.decision_facets.c.decision_id == row["decision_id"]).values(
                review_status=outcome))
            entry = ENTRY_BUILDERS["review_decided"]({**row, **values})
            return self.log.append(conn, [(f"reviews:{review_id}", entry)])[0]

    def raise_alert(self, kind: str, body: Mapping[str, Any]) -> tuple[str, int]:
        row: dict[str, Any] = {"id": str(uuid.uuid4()), "kind": _text("kind", kind, 64),
               "body_json": canonical_json(dict(body)).decode(), "raised_at": _now()}
        with self.writer.begin() as conn:
            return row["id"], self._record(conn, t.alerts, row, "alert_raised")

    def _require_decision(self, conn: Connection, decision_id: str) -> None:
        if conn.execute(select(t.decisions.c.id).where(t.decisions.c.id == decision_id)
                        ).first() is None:
            raise NotFoundError("decision_id", "must be a recorded decision", decision_id)

    # ------------------------------------------------------------------ erasure, retention
    def erase_subject(self, subject_id: str, reason: str = "GDPR Art. 17 request") -> list[int]:
        """Delete the personal payloads (input and salt) of a subject's decisions.

        The decisions keep their commitments and the log still verifies; the input can no
        longer be recovered or confirmed. Returns the leaf indexes of the erasure entries.
        """
        ref = self.subject_ref(subject_id)
        out = []
        with self.writer.begin() as conn:
            ids = conn.execute(select(t.decisions.c.id).join(
                t.payloads, t.payloads.c.decision_id == t.decisions.c.id)
                .where(t.decisions.c.subject_ref == ref)).scalars().all()
            for decision_id in ids:
                conn.execute(delete(t.payloads).where(t.payloads.c.decision_id == decision_id))
                row = {"id": str(uuid.uuid4()), "decision_id": decision_id,
                       "reason": _text("reason", reason, 200), "erased_at": _now()}
                out.append(self._record(conn, t.erasures, row, "payload_erased"))
        return out

    def set_legal_hold(self, decision_id: str, hold: bool) -> None:
        """A legal hold keeps a decision past its retain-until date until released."""
        with self.writer.begin() as conn:
            self._require_decision(conn, decision_id)
            conn.execute(update(t.decisions).where(t.decisions.c.id == decision_id)
                         .values(legal_hold=bool(hold)))

    def purge(self, now: datetime | None = None) -> list[str]:
        """Delete decisions past retain-until (not on legal hold) with their payloads,
        reports and reviews; each deletion is logged, so the log still verifies."""
        cutoff = now or _now()
        purged = []
        with self.writer.begin() as conn:
            due = conn.execute(select(t.decisions.c.id).where(
                t.decisions.c.retain_until < cutoff, t.decisions.c.legal_hold.is_(False))
            ).scalars().all()
            for decision_id in due:
                children = [("reports", r) for r in conn.execute(
                    select(t.reports.c.id).where(t.reports.c.decision_id == decision_id)
                ).scalars()] + [("reviews", r) for r in conn.execute(
                    select(t.reviews.c.id).where(t.reviews.c.decision_id == decision_id)
                ).scalars()] + [("review_events", r) for r in conn.execute(
                    select(t.review_events.c.id).where(
                        t.review_events.c.decision_id == decision_id)).scalars()]
                conn.execute(delete(t.payloads).where(t.payloads.c.decision_id == decision_id))
                conn.execute(delete(t.jobs).where(t.jobs.c.decision_id == decision_id))
                conn.execute(delete(t.review_events).where(
                    t.review_events.c.decision_id == decision_id))
                conn.execute(delete(t.reports).where(t.reports.c.decision_id == decision_id))
                conn.execute(delete(t.reviews).where(t.reviews.c.decision_id == decision_id))
                conn.execute(delete(t.decision_facets).where(
                    t.decision_facets.c.decision_id == decision_id))
                conn.execute(delete(t.decisions).where(t.decisions.c.id == decision_id))
                for record_type, record_id in [*children, ("decisions", decision_id)]:
                    row = {"id": str(uuid.uuid4()), "record_type": record_type,
                           "record_id": record_id, "purged_at": cutoff}
                    self._record(conn, t.purges, row, "record_purged")
                purged.append(decision_id)
        return purged

    # ------------------------------------------------------------------ receipts
    def receipt(self, leaf_index: int) -> Receipt:
        return self.log.receipt(leaf_index)


