"""Out-of-distribution reliability: how far an input is from the model's training data.

The statistics are the model's own training profile (:mod:`xai_sandbox.models.profile`,
kept at registration as ``RegisteredModel.profile``); its :meth:`TrainingProfile.assess`
gives one :class:`OodAssessment` per row, whose ``score`` above 1 means the input is
further from the training data than 99% of it. The names stay importable from here and
from :mod:`xai_sandbox.quality`.
"""

from __future__ import annotations

from xai_sandbox.models.profile import OodAssessment, TrainingProfile, fit_profile

__all__ = ["OodAssessment", "TrainingProfile", "fit_profile"]
