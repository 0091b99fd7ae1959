"""What every use case runs against: the store, the settings and the models being served.

A :class:`Context` is built once per process (the service, a CLI command, a batch worker)
over one :class:`~xai_sandbox.store.Store`. It holds the served models and the caches that
belong to a process (the counterfactual limits per model, the subjects' texts per report,
the anchor streaks and counts); every use case in :mod:`xai_sandbox.workflows` takes it as
its first argument. It is safe to share between threads.
"""

from __future__ import annotations

import threading
from typing import Any

from xai_sandbox.counterfactuals import ActionConstraints
from xai_sandbox.errors import NotFoundError
from xai_sandbox.monitor.alerts import AnchorStreaks, parse_webhooks
from xai_sandbox.monitor.streaks import SharedStreaks
from xai_sandbox.store.jobs import JobQueue
from xai_sandbox.store.store import Store
from xai_sandbox.workflows.served import ServedModel

__all__ = ["Context"]


class Context:
    """The store, the settings and the served models of one process."""

    def __init__(self, store: Store, *, review_sla_working_days: int | None = None) -> None:
        self.store = store
        self.settings = store.settings
        self.sla_days = review_sla_working_days or self.settings.review_sla_working_days
        self.jobs = JobQueue(store, lease_seconds=self.settings.job_lease_seconds)
        # In the database on PostgreSQL, where several processes explain decisions.
        self.streaks: AnchorStreaks | SharedStreaks = (
            SharedStreaks(store, self.settings.alert_streak)
            if store.engine.dialect.name == "postgresql"
            else AnchorStreaks(self.settings.alert_streak))
        # (model, anchor) -> (decisions aligned, hits) in this process, for /metrics.
        self.anchor_counts: dict[tuple[str, str], tuple[int, int]] = {}
        self.webhooks = parse_webhooks(self.settings.webhooks)
        self.lock = threading.Lock()
        self._loading = threading.Lock()
        self._models: dict[str, ServedModel] = {}
        self._texts: dict[str, dict[str, dict[str, Any]]] = {}
        self._constraints: dict[str, ActionConstraints] = {}

    # ---------------------------------------------------------------- served models
    def serve(self, served: ServedModel) -> None:
        """Serve ``served`` under its key (replacing an earlier registration)."""
        with self.lock:
            self._models[served.key] = served
            self._constraints.pop(served.key, None)

    def serves(self, key: str) -> bool:
        with self.lock:
            return key in self._models

    def models(self) -> list[ServedModel]:
        with self.lock:
            return list(self._models.values())

    def model(self, model_id: str, version: str | None = None) -> ServedModel:
        """A served model by id (its latest registered version unless ``version``); a
        model another process registered since this one started is loaded first."""
        found = self._find_model(model_id, version)
        if found is None and self.load_new():
            found = self._find_model(model_id, version)
        if found is None:
            raise NotFoundError("model_id", "must be a registered model",
                                model_id if version is None else f"{model_id}@{version}")
        return found

    def _find_model(self, model_id: str, version: str | None) -> ServedModel | None:
        with self.lock:
            if version is not None:
                return self._models.get(f"{model_id}@{version}")
            same = [m for m in self._models.values() if m.model.model_id == model_id]
            return same[-1] if same else None

    def model_by_key(self, key: str) -> ServedModel:
        with self.lock:
            found = self._models.get(key)
        if found is None and self.load_new():
            with self.lock:
                found = self._models.get(key)
        if found is None:
            raise NotFoundError("model_key", "must be a served model", key)
        return found

    def load_new(self) -> bool:
        """Serve the models registered in the store (by another API process) that this
        one does not serve yet; ``True`` if any was loaded. The subclass that knows how
        to load a model from its spec implements it."""
        return False

    # ---------------------------------------------------------------- per-process caches
    def action_constraints(self, served: ServedModel) -> ActionConstraints | None:
        """What a suggested change may do, from the model's training rows (built once per
        model): within their 1st-99th percentiles and the policy's relative caps, up the
        schema's category orders, and no further from the data than the OOD limit."""
        if served.data is None:
            return None
        with self.lock:
            found = self._constraints.get(served.key)
        if found is None:
            found = ActionConstraints.from_training(
                served.data, served.schema, profile=served.model.profile,
                max_relative_change=dict(served.policy.counterfactual_max_change) or None)
            with self.lock:
                self._constraints[served.key] = found
        return found

    def cached_texts(self, report_id: str) -> dict[str, dict[str, Any]] | None:
        with self.lock:
            return self._texts.get(report_id)

    def cache_texts(self, report_id: str, texts: dict[str, dict[str, Any]]) -> None:
        """Keep a report's subject texts (reports never change); at most 4,096 reports."""
        with self.lock:
            if len(self._texts) >= 4096:
                self._texts.pop(next(iter(self._texts)))
            self._texts[report_id] = texts
