"""How far an explanation can be trusted: out-of-distribution checks (more to come)."""

from xai_sandbox.quality.ood import OodAssessment, TrainingProfile, fit_profile

__all__ = ["OodAssessment", "TrainingProfile", "fit_profile"]
