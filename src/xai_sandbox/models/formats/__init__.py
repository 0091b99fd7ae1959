"""Models brought by their owners, read from files as data: XGBoost (JSON, UBJSON),
LightGBM (text), scikit-learn through skops, ONNX, torch.export and TorchScript, and
MLflow models. :func:`load_model_file` gives a :class:`LoadedModel` whose adapter every
explainer and the decision flow use unchanged; its fingerprint is the file's SHA-256."""

from xai_sandbox.models.formats.files import (
    FORMATS,
    LoadedModel,
    detect_format,
    sha256_file,
    sha256_folder,
)
from xai_sandbox.models.formats.loading import load_model_file

__all__ = ["FORMATS", "LoadedModel", "detect_format", "load_model_file", "sha256_file",
           "sha256_folder"]
