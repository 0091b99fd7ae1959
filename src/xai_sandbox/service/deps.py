"""What every route and console page shares: the runtime, the principal, role checks,
rate limits, the locale and the one rule for reading a full report.

Routes take these as FastAPI dependencies (:data:`RT`, :data:`Who`) or call them; the
console calls the same functions, so a page and its API route answer alike. The decision
flow (:class:`Decider`) is imported here and nowhere else in the service.
"""

from __future__ import annotations

import threading
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path, Request

import xai_sandbox.service.metrics as metrics
from xai_sandbox.errors import InvalidInputError, NotFoundError
from xai_sandbox.models.schema import LOCALES
from xai_sandbox.monitor.alerts import WebhookDispatcher
from xai_sandbox.service.background import AccessRecorder, JobPool, Verifications
from xai_sandbox.service.ratelimit import Limiter, limiter
from xai_sandbox.service.sessions import Sessions
from xai_sandbox.settings import Settings
from xai_sandbox.store import Store
from xai_sandbox.store.accounts import Accounts, Principal
from xai_sandbox.workflows import Decider  # the service's one import of the flow
from xai_sandbox.workflows.text import TextExplainer

__all__ = [
    "AUDIT_READERS",
    "PUBLIC",
    "REPORT_READERS",
    "RT",
    "STAFF",
    "Decider",
    "Runtime",
    "Uuid",
    "Who",
    "acting_role",
    "allowed",
    "base_url",
    "limit_reads",
    "own_decision",
    "principal",
    "read_report",
    "request_locale",
    "require",
    "runtime",
    "runtime_of",
]

STAFF = ("operator", "reviewer", "compliance_officer", "auditor", "admin")
REPORT_READERS = ("reviewer", "compliance_officer", "auditor", "admin")
AUDIT_READERS = ("auditor", "compliance_officer", "admin")
PUBLIC: dict[str, Any] = {"security": []}  # openapi_extra of the routes that need no key
# Decision, review, job and alert ids are UUIDs.
Uuid = Annotated[str, Path(min_length=36, max_length=36,
                           pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-"
                                   r"[0-9a-f]{12}$")]


@dataclass
class Runtime:
    """What the routes share: the store, the decider, accounts, workers and limits."""

    settings: Settings
    store: Store
    decider: Decider
    accounts: Accounts
    access: AccessRecorder
    pool: JobPool
    subject_limit: Limiter
    key_limit: Limiter
    compute_slots: threading.BoundedSemaphore
    webhooks: WebhookDispatcher
    text: TextExplainer
    sessions: Sessions
    verifications: Verifications

    @classmethod
    def open(cls, settings: Settings, *, job_workers: bool = True) -> Runtime:
        """The store that ``settings`` names, its registered models loaded, and the
        workers (not yet started; none for jobs unless ``job_workers``)."""
        store = Store(settings)
        decider = Decider(store)
        decider.load_registered()
        accounts = Accounts(store.engine, store.writer,
                            cache_seconds=settings.key_cache_seconds)
        return cls(settings=settings, store=store, decider=decider, accounts=accounts,
                   access=AccessRecorder(store),
                   pool=JobPool(decider.jobs, decider.run_job,
                                settings.job_workers if job_workers else 0),
                   subject_limit=limiter(settings, store,
                                         settings.rate_limit_subject_per_minute, "subject"),
                   key_limit=limiter(settings, store, settings.rate_limit_key_per_minute,
                                     "key"),
                   compute_slots=threading.BoundedSemaphore(settings.compute_concurrency),
                   webhooks=WebhookDispatcher(store), text=TextExplainer(decider),
                   sessions=Sessions(store, accounts, hours=settings.console_session_hours),
                   verifications=Verifications(store))

    def start(self, *, webhooks: bool = True) -> None:
        self.pool.start()
        if webhooks:
            self.webhooks.start()

    def close(self) -> None:
        self.webhooks.stop()
        self.pool.stop(self.settings.job_drain_seconds)
        self.access.stop()
        self.store.close()


def runtime_of(request: Request) -> Runtime:
    """The runtime of the app serving ``request`` (made by the lifespan)."""
    rt: Runtime = request.app.state.rt
    return rt


async def runtime(request: Request) -> Runtime:
    return runtime_of(request)


RT = Annotated[Runtime, Depends(runtime)]


async def principal(request: Request) -> Principal:
    """The principal of the request's bearer key (the OpenAPI document declares the
    scheme once for every route; see ``app.openapi_security``).

    async: one indexed lookup (or a cache hit), run on the event loop rather than
    hopping to a thread."""
    rt = runtime_of(request)
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(401, "authorization: a bearer API key is required",
                            headers={"WWW-Authenticate": "Bearer"})
    found = rt.accounts.authenticate(token.strip())
    if found is None:
        raise HTTPException(401, "authorization: the API key is unknown or revoked",
                            headers={"WWW-Authenticate": "Bearer"})
    request.state.principal = found
    return found


Who = Annotated[Principal, Depends(principal)]


def base_url(request: Request) -> str:
    """The service's own address, for the links in an answer."""
    return str(request.base_url).rstrip("/")


def require(who: Principal, *roles: str) -> None:
    """403 unless ``who`` holds one of ``roles``."""
    if not who.has(*roles):
        raise HTTPException(403, f"role: this needs one of {list(roles)}; you have "
                                 f"{sorted(who.roles)}")


def allowed(*roles: str) -> Any:
    """A route dependency: 403 unless the key holds one of ``roles``. Route dependencies
    run before the body is read, so a key without the role gets 403 for any body and
    learns nothing of the body's schema from a 422."""

    async def check(who: Who) -> None:
        require(who, *roles)

    return Depends(check)


def acting_role(who: Principal, preferred: tuple[str, ...]) -> str:
    """The role a principal acts in, for the access log."""
    for role in preferred:
        if role in who.roles:
            return role
    return sorted(who.roles)[0]


def own_decision(rt: Runtime, who: Principal, decision_id: str) -> dict[str, Any]:
    """The decision, if ``who`` may see it; a subject gets 404 for anyone else's."""
    row = rt.store.decision(decision_id)
    if who.has(*STAFF):
        return row
    if who.subject_ref is None or row["subject_ref"] != who.subject_ref:
        raise NotFoundError("decision_id", "must be a recorded decision", decision_id)
    return row


def limit_reads(rt: Runtime, who: Principal) -> None:
    """Explanation reads: per subject and per key (429 with ``Retry-After``)."""
    checks = [("key", who.key_id, rt.key_limit)]
    if who.subject_ref is not None:
        checks.append(("subject", who.subject_ref, rt.subject_limit))
    for scope, key, bucket in checks:
        wait = bucket.take(key)
        if wait:
            metrics.RATE_LIMITED.labels(scope).inc()
            raise HTTPException(429, f"rate limit: too many explanation reads for this "
                                     f"{scope}; retry in {int(wait)} s",
                                headers={"Retry-After": str(int(wait))})


def request_locale(request: Request, lang: str | None) -> str:
    """``lang`` if given (checked), else the first known language of Accept-Language,
    else English."""
    if lang is not None:
        if lang not in LOCALES:
            raise InvalidInputError("lang", f"must be one of {list(LOCALES)}", lang)
        return lang
    header = request.headers.get("accept-language", "")
    for part in header.split(","):
        tag = part.split(";")[0].strip().lower()
        if tag[:2] in LOCALES:
            return tag[:2]
    return "en"


def read_report(rt: Runtime, who: Principal, decision_id: str, action: str, purpose: str
                ) -> Mapping[str, Any]:
    """The full report, read by ``who`` for ``purpose``: report readers only, under the
    rate limits, and the access event written before the report is assembled (so the
    report lists it)."""
    require(who, *REPORT_READERS)
    # The purpose is printed in the report's access log (PDF included): text a person
    # reads, so no control, format, private-use or unassigned characters.
    odd = sorted({f"U+{ord(c):04X}" for c in purpose
                  if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn")})
    if odd:
        raise InvalidInputError("purpose", "must be printable text (no control, format, "
                                "private-use or unassigned characters)", odd)
    rt.store.decision(decision_id)
    limit_reads(rt, who)
    rt.access.record(record_type="decisions", record_id=decision_id, action=action,
                     actor=who.name, role=acting_role(who, REPORT_READERS), purpose=purpose)
    return rt.decider.full_report(decision_id)
