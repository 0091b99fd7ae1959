"""Model adapters, feature schemas, fingerprints, training profiles and the hook sandbox."""

from xai_sandbox.models.adapters import ModelAdapter, SklearnAdapter, TorchAdapter, wrap
from xai_sandbox.models.fingerprint import fingerprint_estimator, fingerprint_module
from xai_sandbox.models.profile import OodAssessment, TrainingProfile, fit_profile
from xai_sandbox.models.registry import ModelRegistry, RegisteredModel, register
from xai_sandbox.models.sandbox import HookSandbox, LayerRecord, select_layers
from xai_sandbox.models.schema import Category, FeatureSchema, FeatureSpec

__all__ = [
    "Category",
    "FeatureSchema",
    "FeatureSpec",
    "HookSandbox",
    "LayerRecord",
    "ModelAdapter",
    "ModelRegistry",
    "OodAssessment",
    "RegisteredModel",
    "SklearnAdapter",
    "TorchAdapter",
    "TrainingProfile",
    "fingerprint_estimator",
    "fingerprint_module",
    "fit_profile",
    "register",
    "select_layers",
    "wrap",
]
