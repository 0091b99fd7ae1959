"""Alerts: raised once, stored and logged, delivered to webhooks until they answer.

An alert and one outbox row per configured receiver are written in one transaction (and
the alert enters the audit log), so an alert is never lost. :class:`WebhookDispatcher`
posts due outbox rows, retries failures with capped exponential backoff, and keeps trying
across restarts because the outbox is in the database. A second alert with the same
de-duplication key is not raised while the first is unacknowledged. Each delivery carries
``X-XAI-Alert-Id`` so a receiver can drop a repeat (a delivery whose answer was lost is
sent again: at-least-once).

Message shapes: ``generic`` (the alert as JSON), ``wecom`` (WeCom group robot markdown),
``slack`` (incoming-webhook text), ``teams`` (MessageCard).
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update

from xai_sandbox.audit.canonical import canonical_json
from xai_sandbox.errors import InvalidInputError, NotFoundError
from xai_sandbox.store import tables as t
from xai_sandbox.store.entries import rfc3339
from xai_sandbox.store.store import Store

__all__ = ["SHAPES", "AnchorStreaks", "Webhook", "WebhookDispatcher", "acknowledge",
           "list_alerts", "message", "parse_webhooks", "raise_alert"]

log = logging.getLogger("xai_sandbox.monitor")
SHAPES = ("generic", "wecom", "slack", "teams")


@dataclass(frozen=True)
class Webhook:
    url: str
    shape: str = "generic"


def parse_webhooks(spec: str | Sequence[str] | None) -> list[Webhook]:
    """``shape=url`` items (comma-separated in a string); a bare URL is generic."""
    if not spec:
        return []
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    out = []
    for item in filter(None, items):
        shape, sep, url = item.partition("=")
        if not sep:
            shape, url = "generic", item
        if shape not in SHAPES:
            raise InvalidInputError("webhooks", f"shape must be one of {list(SHAPES)}", item)
        if not url.startswith(("http://", "https://")):
            raise InvalidInputError("webhooks", "must be http:// or https:// URLs", item)
        out.append(Webhook(url=url, shape=shape))
    return out


def message(shape: str, alert: Mapping[str, Any]) -> dict[str, Any]:
    """The body a receiver of ``shape`` expects."""
    body = alert["body"]
    title = body.get("title") or alert["kind"]
    lines = [f"{k}: {v}" for k, v in body.items() if k != "title" and not isinstance(
        v, dict | list)]
    text = f"[XAI-Sandbox] {title}\n" + "\n".join(lines)
    if shape == "wecom":
        return {"msgtype": "markdown", "markdown": {"content": f"**{title}**\n" +
                                                    "\n".join(lines)}}
    if shape == "slack":
        return {"text": text}
    if shape == "teams":
        return {"@type": "MessageCard", "@context": "https://schema.org/extensions",
                "summary": title, "title": f"XAI-Sandbox: {title}",
                "sections": [{"facts": [{"name": k, "value": str(v)} for k, v in body.items()
                                        if k != "title" and not isinstance(v, dict | list)]}]}
    return {"alert_id": alert["id"], "kind": alert["kind"], "raised_at": alert["raised_at"],
            "body": body}


def raise_alert(store: Store, kind: str, body: Mapping[str, Any], *, dedup_key: str,
                webhooks: Sequence[Webhook] = ()) -> str | None:
    """Store, log and queue an alert; ``None`` if one with ``dedup_key`` is still open."""
    now = datetime.now(UTC)
    row: dict[str, Any] = {"id": str(uuid.uuid4()), "kind": kind[:64],
                           "body_json": canonical_json(dict(body)).decode(),
                           "raised_at": now, "dedup_key": dedup_key[:200]}
    with store.writer.begin() as conn:
        open_ = conn.execute(select(t.alerts.c.id).where(
            t.alerts.c.dedup_key == row["dedup_key"], t.alerts.c.acknowledged_at.is_(None))
        ).first()
        if open_ is not None:
            return None
        store._record(conn, t.alerts, row, "alert_raised")
        for hook in webhooks:
            conn.execute(insert(t.alert_deliveries).values(
                id=str(uuid.uuid4()), alert_id=row["id"], url=hook.url, shape=hook.shape,
                status="pending", attempts=0, next_attempt_at=now))
    return str(row["id"])


def list_alerts(store: Store, *, open_only: bool = False, limit: int = 100,
                offset: int = 0) -> list[dict[str, Any]]:
    query = select(t.alerts).order_by(t.alerts.c.raised_at.desc())
    if open_only:
        query = query.where(t.alerts.c.acknowledged_at.is_(None))
    with store.engine.connect() as conn:
        rows = conn.execute(query.limit(limit).offset(offset)).mappings().all()
        deliveries = conn.execute(select(t.alert_deliveries).where(
            t.alert_deliveries.c.alert_id.in_([r["id"] for r in rows]))).mappings().all()
    by_alert: dict[str, list[dict[str, Any]]] = {}
    for d in deliveries:
        by_alert.setdefault(d["alert_id"], []).append({
            "url": d["url"], "shape": d["shape"], "status": d["status"],
            "attempts": d["attempts"], "delivered_at": rfc3339(d["delivered_at"])})
    return [{"alert_id": r["id"], "kind": r["kind"], "body": json.loads(r["body_json"]),
             "raised_at": rfc3339(r["raised_at"]),
             "acknowledged_at": rfc3339(r["acknowledged_at"]),
             "acknowledged_by": r["acknowledged_by"],
             "deliveries": by_alert.get(r["id"], [])} for r in rows]


def acknowledge(store: Store, alert_id: str, actor: str) -> None:
    with store.writer.begin() as conn:
        done = conn.execute(update(t.alerts).where(
            t.alerts.c.id == alert_id, t.alerts.c.acknowledged_at.is_(None)).values(
            acknowledged_at=datetime.now(UTC), acknowledged_by=actor[:128]))
        if done.rowcount != 1:
            exists = conn.execute(select(t.alerts.c.id).where(t.alerts.c.id == alert_id)
                                  ).first()
            if exists is None:
                raise NotFoundError("alert_id", "must be a raised alert", alert_id)


class AnchorStreaks:
    """Consecutive decisions of a model on which an anchor's risk reached its threshold;
    an alert is due when a streak reaches ``n`` (default 5)."""

    def __init__(self, n: int = 5) -> None:
        if n < 1:
            raise InvalidInputError("n", "must be at least 1", n)
        self.n = n
        self._streaks: dict[tuple[str, str], list[str]] = {}
        self._lock = threading.Lock()

    def update(self, model_key: str, decision_id: str, matches: Sequence[Mapping[str, Any]],
               *, replay: bool = False) -> list[tuple[Mapping[str, Any], list[str]]]:
        """Record one decision's anchor matches; returns (match, decision ids) of every
        anchor whose streak has just reached ``n``. ``replay`` (rebuilding the streaks from
        stored reports after a restart) raises nothing: those alerts were raised then."""
        due = []
        with self._lock:
            for m in matches:
                key = (model_key, str(m["anchor"]))
                streak = self._streaks.setdefault(key, [])
                if m["hit"]:
                    streak.append(decision_id)
                    if len(streak) == self.n:
                        if not replay:
                            due.append((m, list(streak)))
                        streak.clear()
                else:
                    streak.clear()
        return due


class WebhookDispatcher:
    """A thread that posts due outbox rows; failures are retried with backoff
    ``min(base * 2**attempts, cap)`` seconds, without a limit on attempts. Each API
    process runs one; a delivery is claimed by one of them before it is posted."""

    def __init__(self, store: Store, *, base: float = 1.0, cap: float = 300.0,
                 timeout: float = 5.0, poll: float = 0.5) -> None:
        self.store = store
        self.base, self.cap, self.timeout, self.poll = base, cap, timeout, poll
        # A claimed delivery is held past its post (sent at least once; the receiver
        # deduplicates on X-XAI-Alert-Id if the process dies between post and record).
        self.claim_seconds = timeout * 2 + 5
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> WebhookDispatcher:
        self._thread = threading.Thread(target=self._loop, name="xai-webhooks", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout + 5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.deliver_due()
            except Exception:  # the database is away: try again next round
                log.exception("webhook delivery round failed")
            self._stop.wait(self.poll)

    def deliver_due(self) -> int:
        """Post every due delivery once; returns how many were delivered."""
        now = datetime.now(UTC)
        with self.store.engine.connect() as conn:
            due = conn.execute(select(t.alert_deliveries, t.alerts.c.kind,
                                      t.alerts.c.body_json, t.alerts.c.raised_at)
                               .join(t.alerts, t.alerts.c.id == t.alert_deliveries.c.alert_id)
                               .where(t.alert_deliveries.c.status == "pending",
                                      t.alert_deliveries.c.next_attempt_at <= now)
                               .order_by(t.alert_deliveries.c.next_attempt_at).limit(50)
                               ).mappings().all()
        delivered = 0
        for d in due:
            if not self._claim(d["id"]):
                continue  # another process's dispatcher holds this delivery
            alert = {"id": d["alert_id"], "kind": d["kind"],
                     "body": json.loads(d["body_json"]), "raised_at": rfc3339(d["raised_at"])}
            error = self._post(d["url"], message(d["shape"], alert), d["alert_id"])
            with self.store.writer.begin() as conn:
                if error is None:
                    conn.execute(update(t.alert_deliveries).where(
                        t.alert_deliveries.c.id == d["id"]).values(
                        status="delivered", attempts=d["attempts"] + 1,
                        delivered_at=datetime.now(UTC), last_error=None))
                    delivered += 1
                else:
                    wait = min(self.base * 2 ** d["attempts"], self.cap)
                    conn.execute(update(t.alert_deliveries).where(
                        t.alert_deliveries.c.id == d["id"]).values(
                        attempts=d["attempts"] + 1, last_error=error[:500],
                        next_attempt_at=datetime.now(UTC) + timedelta(seconds=wait)))
        return delivered

    def _claim(self, delivery_id: str) -> bool:
        """Hold a due delivery for ``claim_seconds`` by moving its next attempt past now;
        of several dispatchers (one per API process) exactly one wins the update."""
        now = datetime.now(UTC)
        deliveries = t.alert_deliveries
        with self.store.writer.begin() as conn:
            won = conn.execute(update(deliveries).where(
                deliveries.c.id == delivery_id, deliveries.c.status == "pending",
                deliveries.c.next_attempt_at <= now).values(
                next_attempt_at=now + timedelta(seconds=self.claim_seconds)))
        return won.rowcount == 1

    def _post(self, url: str, body: Mapping[str, Any], alert_id: str) -> str | None:
        request = urllib.request.Request(
            url, data=json.dumps(body, ensure_ascii=False).encode(), method="POST",
            headers={"Content-Type": "application/json", "X-XAI-Alert-Id": alert_id})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                status = int(answer.status)
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            return f"{type(exc).__name__}: {exc}"
        return None if 200 <= status < 300 else f"HTTP {status}"
