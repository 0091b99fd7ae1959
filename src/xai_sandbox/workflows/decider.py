"""The use cases as one object: :class:`Decider` is a :class:`Context` whose methods are the
workflows of this package, for a caller that holds one process-wide object (the service,
the CLI, a notebook). Each method is the function of the same name in its module."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from xai_sandbox.reports.report import Report
from xai_sandbox.store.jobs import ClaimedJob
from xai_sandbox.workflows import decide, explain, jobs, reading, register, reviews, subject, watch
from xai_sandbox.workflows.context import Context
from xai_sandbox.workflows.scoring import score
from xai_sandbox.workflows.served import DecisionOutcome, ServedModel

__all__ = ["Decider"]


class Decider(Context):
    """Decisions, their explanations and their reports, over one store."""

    final_outcome = staticmethod(reading.final_outcome)

    def register(self, spec: Mapping[str, Any]) -> ServedModel:
        """Load, register, record and serve a model from its spec (see
        :func:`~xai_sandbox.workflows.register.register_model`)."""
        return register.register_model(self, spec)

    def load_registered(self) -> list[str]:
        """Serve again every model recorded with a spec (after a restart)."""
        return register.load_registered(self)

    def load_new(self) -> bool:
        with self._loading:  # one load at a time; the others then find the model served
            return bool(register.load_registered(self))

    def score(self, served: ServedModel, features: Mapping[str, Any]
              ) -> tuple[np.ndarray, dict[str, Any]]:
        return score(served, features)

    def decide(self, *, model_id: str, subject_id: str, features: Mapping[str, Any],
               version: str | None = None, case_ref: str | None = None,
               explain_now: bool = True) -> DecisionOutcome:
        return decide.decide(self, model_id=model_id, subject_id=subject_id,
                             features=features, version=version, case_ref=case_ref,
                             explain_now=explain_now)

    def run_job(self, job: ClaimedJob) -> str | None:
        return jobs.run_job(self, job)

    def watch(self, model_key: str, decision_id: str, report: Mapping[str, Any]) -> list[str]:
        return watch.watch(self, model_key, decision_id, report)

    def explain_decision(self, decision_id: str, methods: Sequence[str]) -> Report:
        return explain.explain_decision(self, decision_id, methods)

    def explain_adhoc(self, *, model_id: str, features: Mapping[str, Any], method: str,
                      actor: str, version: str | None = None, target: str | None = None,
                      params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return explain.explain_adhoc(self, model_id=model_id, features=features,
                                     method=method, actor=actor, version=version,
                                     target=target, params=params)

    def subject_view(self, decision_id: str, locale: str, review_link: str,
                     subject_ref: str | None = None) -> dict[str, Any]:
        return subject.subject_view(self, decision_id, locale, review_link, subject_ref)

    def request_review(self, decision_id: str, *, requested_by: str, reason: str,
                       kind: str = "human_review", channel: str = "api") -> dict[str, Any]:
        return reviews.request_review(self, decision_id, requested_by=requested_by,
                                      reason=reason, kind=kind, channel=channel)

    def claim_review(self, review_id: str, *, reviewer: str, role: str,
                     release: bool = False) -> int:
        return reviews.claim_review(self, review_id, reviewer=reviewer, role=role,
                                    release=release)

    def decide_review(self, review_id: str, *, outcome: str, reviewer: str, role: str,
                      rationale: str) -> int:
        return reviews.decide_review(self, review_id, outcome=outcome, reviewer=reviewer,
                                     role=role, rationale=rationale)

    def full_report(self, decision_id: str) -> Report:
        return reading.full_report(self, decision_id)
