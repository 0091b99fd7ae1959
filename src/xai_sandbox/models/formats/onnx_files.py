"""ONNX models: scored by onnxruntime; where the graph converts to PyTorch (see
:mod:`.onnx_torch`), served as that module so gradient methods run too.

The model takes one float tensor of the schema's encoded columns, ``(n, d)``. Its output
is the first float tensor of rank 1 or 2 (a scikit-learn classifier exported by skl2onnx
has a label output first and its probabilities second; export it with
``options={id(model): {"zipmap": False}}`` so that they are a tensor).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from xai_sandbox.errors import InvalidInputError, UnsupportedModelError
from xai_sandbox.models.adapters import ModelAdapter, TorchAdapter, model_errors

__all__ = ["OnnxAdapter", "load_onnx"]

_FLOATS = {"tensor(float)", "tensor(double)", "tensor(float16)"}
_PROBABILITY_OPS = {"Softmax", "Sigmoid", "LinearClassifier", "SVMClassifier",
                    "TreeEnsembleClassifier", "Normalizer"}
# How close the converted module must score to onnxruntime for it to be served.
_AGREEMENT = 1e-4


class OnnxAdapter(ModelAdapter):
    """An ONNX model behind onnxruntime: black-box methods only."""

    framework = "onnx"
    differentiable = False
    input_kind = "tabular"

    def __init__(self, session: Any, *, output: str, output_space: str, sha256: str) -> None:
        self.session = session
        inp = session.get_inputs()[0]
        self.input_name = inp.name
        self.input_dtype = np.float64 if inp.type == "tensor(double)" else np.float32
        width = inp.shape[-1] if len(inp.shape) == 2 else None
        self.sample_shape = (int(width),) if isinstance(width, int) else None
        self.output = output
        self.output_space = output_space
        self.source_sha256 = sha256

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = self.validate_inputs(X, "X")
        with model_errors(X.shape):
            try:
                (out,) = self.session.run([self.output],
                                          {self.input_name: X.astype(self.input_dtype)})
            except Exception as exc:  # onnxruntime raises its own Fail/InvalidArgument
                raise ValueError(str(exc).splitlines()[0][:200]) from exc
        out = np.asarray(out, dtype=np.float64)
        return out[:, None] if out.ndim == 1 else out

    def fingerprint(self) -> str:
        assert self.source_sha256 is not None
        return self.source_sha256


class OnnxTorchAdapter(TorchAdapter):
    """An ONNX model whose graph converted to PyTorch: every method, gradients too."""

    def __init__(self, module: Any, *, output_space: str, sha256: str,
                 sample_shape: tuple[int, ...] | None) -> None:
        super().__init__(module, sample_shape=sample_shape, output_space=output_space)
        self.source_sha256 = sha256


def _pick_output(model: Any, session: Any) -> tuple[str, str]:
    """The output explained, and its space (probabilities after a softmax or sigmoid, or a
    classifier operator; else logits)."""
    outputs = [o for o in session.get_outputs() if o.type in _FLOATS and len(o.shape) in (1, 2)]
    if not outputs:
        kinds = [f"{o.name}: {o.type}" for o in session.get_outputs()]
        raise UnsupportedModelError(
            "model", "must output a float tensor of scores (for skl2onnx classifiers export "
            "with zipmap=False)", kinds)
    name = outputs[0].name
    producer = next((n for n in model.graph.node if name in n.output), None)
    op = producer.op_type if producer is not None else ""
    space = "probability" if op in _PROBABILITY_OPS or "prob" in name.lower() else "logit"
    return name, space


def load_onnx(path: Path, sha256: str, *, output_space: str | None = None,
              ) -> tuple[ModelAdapter, tuple[str, ...]]:
    """The adapter for an ONNX file and notes on its methods."""
    import onnx
    import onnxruntime

    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
        session = onnxruntime.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # protobuf, checker and runtime errors have no common base
        raise UnsupportedModelError("model", "must be a valid ONNX model "
                                    f"({type(exc).__name__})", path.name) from exc
    inputs = session.get_inputs()
    if len(inputs) != 1 or inputs[0].type not in _FLOATS or len(inputs[0].shape) != 2:
        raise UnsupportedModelError(
            "model", "must take one float tensor (n, columns) of the encoded features",
            [f"{i.name}: {i.type} {i.shape}" for i in inputs])
    output, guessed = _pick_output(model, session)
    if output_space not in (None, "probability", "logit", "output"):
        raise InvalidInputError("output_space", "must be 'probability', 'logit' or 'output'",
                                output_space)
    space = output_space or guessed
    black_box = OnnxAdapter(session, output=output, output_space=space, sha256=sha256)
    reason = _converted_reason(model, output, session)
    if isinstance(reason, str):
        return black_box, (f"gradient methods are unavailable: {reason}; black-box methods "
                           "(exact_shapley, kernel_shap, lime, occlusion) run through "
                           "onnxruntime",)
    return OnnxTorchAdapter(reason, output_space=space, sha256=sha256,
                            sample_shape=black_box.sample_shape), (
        "the ONNX graph converts to PyTorch: gradient methods run on the converted module, "
        f"which scores within {_AGREEMENT:g} of onnxruntime",)


def _converted_reason(model: Any, output: str, session: Any) -> Any:
    """The converted module, or why there is none."""
    import torch

    from xai_sandbox.models.formats.onnx_torch import convertible, onnx_to_torch

    reason = convertible(model)
    if reason is not None:
        return reason
    module = onnx_to_torch(model, output).eval()
    inp = session.get_inputs()[0]
    width = inp.shape[-1] if isinstance(inp.shape[-1], int) else 1
    probe = np.random.default_rng(0).normal(size=(16, width)).astype(np.float32)
    (expected,) = session.run([output], {inp.name: probe.astype(
        np.float64 if inp.type == "tensor(double)" else np.float32)})
    with torch.no_grad():
        got = module(torch.as_tensor(probe)).double().numpy()
    expected = np.asarray(expected, dtype=np.float64).reshape(got.shape)
    gap = float(np.max(np.abs(got - expected)))
    if not gap <= _AGREEMENT:
        return (f"the graph converted to PyTorch scores up to {gap:.2g} away from onnxruntime "
                f"(tolerance {_AGREEMENT:g})")
    return module
