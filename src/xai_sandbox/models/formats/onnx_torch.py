"""ONNX graphs run as PyTorch modules, so that gradient methods explain them.

onnxruntime scores any ONNX model but gives no gradients. Most tabular networks are a few
dense layers and activations: :func:`onnx_to_torch` turns such a graph into a
``torch.nn.Module`` that evaluates the same operators with torch, node by node, from the
graph's own initializers (never from code in the file). :func:`convertible` says, before
that, why a graph cannot be converted (the first operator without a torch counterpart, such
as ``ai.onnx.ml.TreeEnsembleClassifier``); the loader then serves the model through
onnxruntime with black-box methods only, and says so.

``onnx2torch`` does the same job in general but imports torchvision, which does not import
beside the CPU build of torch this project pins; the operators here are those of exported
dense, convolution-free networks, each one checked against onnxruntime in the tests, and a
converted module is served only when it scores within 1e-4 of onnxruntime on probe rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from xai_sandbox.errors import InvalidInputError, UnsupportedModelError

__all__ = ["SUPPORTED_OPS", "OnnxModule", "convertible", "onnx_to_torch"]

_Op = Callable[[list[Any], dict[str, Any], int], Any]


def _ints(value: Any) -> list[int]:
    """An int64 tensor input (a shape, axes) as a Python list."""
    if isinstance(value, torch.Tensor):
        return [int(v) for v in value.reshape(-1).tolist()]
    return [int(v) for v in value]


def _gemm(x: list[Any], a: dict[str, Any], _: int) -> Any:
    A, B = x[0], x[1]
    if a.get("transA", 0):
        A = A.transpose(-1, -2)
    if a.get("transB", 0):
        B = B.transpose(-1, -2)
    out = a.get("alpha", 1.0) * (A @ B)
    if len(x) > 2 and x[2] is not None:
        out = out + a.get("beta", 1.0) * x[2]
    return out


def _softmax(fn: Callable[..., Any]) -> _Op:
    def op(x: list[Any], a: dict[str, Any], opset: int) -> Any:
        axis = a.get("axis", -1 if opset >= 13 else 1)
        if opset >= 13:
            return fn(x[0], dim=axis)
        # Before opset 13 the input is coerced to 2-D at ``axis``.
        shape = x[0].shape
        flat = x[0].reshape(int(np.prod(shape[:axis])), -1)
        return fn(flat, dim=1).reshape(shape)
    return op


def _flatten(x: list[Any], a: dict[str, Any], _: int) -> Any:
    axis = a.get("axis", 1)
    axis = axis if axis >= 0 else x[0].ndim + axis
    lead = int(np.prod(x[0].shape[:axis])) if axis else 1
    return x[0].reshape(lead, -1)


def _reshape(x: list[Any], a: dict[str, Any], _: int) -> Any:
    shape = _ints(x[1])
    if not a.get("allowzero", 0):
        shape = [x[0].shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x[0].reshape(shape)


def _clip(x: list[Any], a: dict[str, Any], opset: int) -> Any:
    if opset >= 11:
        low = x[1] if len(x) > 1 else None
        high = x[2] if len(x) > 2 else None
    else:
        low, high = a.get("min"), a.get("max")
    return torch.clamp(x[0], min=low, max=high)


def _batch_norm(x: list[Any], a: dict[str, Any], _: int) -> Any:
    data, scale, bias, mean, var = x[:5]
    shape = [1, -1] + [1] * (data.ndim - 2)
    inv = scale.reshape(shape) / torch.sqrt(var.reshape(shape) + a.get("epsilon", 1e-5))
    return (data - mean.reshape(shape)) * inv + bias.reshape(shape)


def _axes(x: list[Any], a: dict[str, Any], opset: int, since: int) -> list[int] | None:
    if opset >= since:
        return _ints(x[1]) if len(x) > 1 and x[1] is not None else None
    return list(a["axes"]) if "axes" in a else None


def _unsqueeze(x: list[Any], a: dict[str, Any], opset: int) -> Any:
    out = x[0]
    axes = _axes(x, a, opset, 13) or []
    rank = out.ndim + len(axes)
    for axis in sorted(ax if ax >= 0 else rank + ax for ax in axes):
        out = out.unsqueeze(axis)
    return out


def _squeeze(x: list[Any], a: dict[str, Any], opset: int) -> Any:
    axes = _axes(x, a, opset, 13)
    if axes is None:
        return x[0].squeeze()
    return x[0].squeeze(tuple(ax if ax >= 0 else x[0].ndim + ax for ax in axes))


def _reduce(fn: Callable[..., Any], axes_input_since: int) -> _Op:
    def op(x: list[Any], a: dict[str, Any], opset: int) -> Any:
        axes = _axes(x, a, opset, axes_input_since)
        keep = bool(a.get("keepdims", 1))
        if axes is None or not axes:
            if a.get("noop_with_empty_axes", 0):
                return x[0]
            axes = list(range(x[0].ndim))
        return fn(x[0], dim=tuple(axes), keepdim=keep)
    return op


def _gelu(x: list[Any], a: dict[str, Any], _: int) -> Any:
    approximate = a.get("approximate", "none")
    return torch.nn.functional.gelu(x[0], approximate=approximate)


def _cast(x: list[Any], a: dict[str, Any], _: int) -> Any:
    from onnx import TensorProto

    kinds = {TensorProto.FLOAT: torch.float32, TensorProto.DOUBLE: torch.float64,
             TensorProto.FLOAT16: torch.float16, TensorProto.INT64: torch.int64,
             TensorProto.INT32: torch.int32, TensorProto.BOOL: torch.bool}
    to = a["to"]
    if to not in kinds:
        raise UnsupportedModelError("model", "Cast must be to a float, int or bool type", to)
    return x[0].to(kinds[to])


def _concat(x: list[Any], a: dict[str, Any], _: int) -> Any:
    return torch.cat(list(x), dim=a["axis"])


def _transpose(x: list[Any], a: dict[str, Any], _: int) -> Any:
    perm = a.get("perm") or list(range(x[0].ndim))[::-1]
    return x[0].permute(*perm)


def _gather(x: list[Any], a: dict[str, Any], _: int) -> Any:
    return torch.index_select(x[0], a.get("axis", 0), x[1].reshape(-1).long()).reshape(
        *x[0].shape[:a.get("axis", 0)], *x[1].shape, *x[0].shape[a.get("axis", 0) + 1:])


def _shape(x: list[Any], a: dict[str, Any], _: int) -> Any:
    dims = list(x[0].shape)[a.get("start", 0):a.get("end")]
    return torch.tensor(dims, dtype=torch.int64)


def _unary(fn: Callable[[Any], Any]) -> _Op:
    return lambda x, a, _: fn(x[0])


def _binary(fn: Callable[[Any, Any], Any]) -> _Op:
    return lambda x, a, _: fn(x[0], x[1])


def _variadic(fn: Callable[[Any, Any], Any]) -> _Op:
    def op(x: list[Any], a: dict[str, Any], _: int) -> Any:
        out = x[0]
        for other in x[1:]:
            out = fn(out, other)
        return out
    return op


_F = torch.nn.functional
_OPS: dict[str, _Op] = {
    "Gemm": _gemm,
    "MatMul": _binary(torch.matmul),
    "Add": _binary(torch.add), "Sub": _binary(torch.sub), "Mul": _binary(torch.mul),
    "Div": _binary(torch.div), "Pow": _binary(torch.pow),
    "Sum": _variadic(torch.add), "Max": _variadic(torch.maximum),
    "Min": _variadic(torch.minimum),
    "Neg": _unary(torch.neg), "Abs": _unary(torch.abs), "Exp": _unary(torch.exp),
    "Log": _unary(torch.log), "Sqrt": _unary(torch.sqrt), "Erf": _unary(torch.erf),
    "Reciprocal": _unary(torch.reciprocal),
    "Relu": _unary(torch.relu), "Tanh": _unary(torch.tanh), "Sigmoid": _unary(torch.sigmoid),
    "Softplus": _unary(_F.softplus), "Softsign": _unary(_F.softsign),
    "LeakyRelu": lambda x, a, _: _F.leaky_relu(x[0], a.get("alpha", 0.01)),
    "Elu": lambda x, a, _: _F.elu(x[0], a.get("alpha", 1.0)),
    "Selu": lambda x, a, _: (a.get("gamma", 1.0507009873554805) * torch.where(
        x[0] > 0, x[0], a.get("alpha", 1.6732632423543772) * (torch.exp(x[0]) - 1))),
    "HardSigmoid": lambda x, a, _: torch.clamp(
        a.get("alpha", 0.2) * x[0] + a.get("beta", 0.5), 0, 1),
    "Gelu": _gelu,
    "Softmax": _softmax(torch.softmax), "LogSoftmax": _softmax(torch.log_softmax),
    "Flatten": _flatten, "Reshape": _reshape, "Clip": _clip,
    "Identity": _unary(lambda v: v), "Dropout": _unary(lambda v: v),
    "BatchNormalization": _batch_norm, "Cast": _cast, "Concat": _concat,
    "Transpose": _transpose, "Unsqueeze": _unsqueeze, "Squeeze": _squeeze,
    "ReduceMean": _reduce(torch.mean, 18), "ReduceSum": _reduce(torch.sum, 13),
    "Gather": _gather, "Shape": _shape,
}
SUPPORTED_OPS: frozenset[str] = frozenset(_OPS) | {"Constant"}
"""The operators of the default ONNX domain that convert."""


def _opset(model: Any) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 1


def convertible(model: Any) -> str | None:
    """Why ``model`` (an ``onnx.ModelProto``) does not convert, or ``None`` when it does:
    the first operator outside :data:`SUPPORTED_OPS` (naming its domain when it is not the
    default one), or a graph that is not one input to one output tensor."""
    graph = model.graph
    initialised = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initialised]
    if len(inputs) != 1:
        return f"the graph takes {len(inputs)} inputs (one tensor of encoded columns converts)"
    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            return f"operator {node.domain}.{node.op_type} has no PyTorch counterpart"
        if node.op_type not in SUPPORTED_OPS:
            return f"operator {node.op_type} has no PyTorch conversion here"
        if node.op_type == "Dropout" and len(node.output) > 1 and node.output[1]:
            return "a Dropout whose mask is used does not convert"
    return None


def _attributes(node: Any) -> dict[str, Any]:
    from onnx import helper

    out = {}
    for attribute in node.attribute:
        value = helper.get_attribute_value(attribute)
        out[attribute.name] = value.decode() if isinstance(value, bytes) else value
    return out


class OnnxModule(torch.nn.Module):
    """An ONNX graph evaluated with torch operators, node by node.

    Float initializers are frozen parameters (so the module has a dtype and moves with
    ``.to()``); integer ones (shapes, axes) are buffers. ``forward`` takes the graph's one
    input and returns the named output.
    """

    def __init__(self, model: Any, output: str | None = None) -> None:
        from onnx import numpy_helper

        super().__init__()
        reason = convertible(model)
        if reason is not None:
            raise UnsupportedModelError("model", "must be an ONNX graph that converts to "
                                        "PyTorch", reason)
        graph = model.graph
        names = [o.name for o in graph.output]
        if output is not None and output not in names:
            raise InvalidInputError("output", f"must be one of the graph's outputs {names}",
                                    output)
        self.output = output or names[0]
        self.opset = _opset(model)
        self._slots: dict[str, str] = {}
        self.weights = torch.nn.ParameterDict()
        for number, tensor in enumerate(graph.initializer):
            self._hold(f"i{number}", tensor.name, numpy_helper.to_array(tensor))
        initialised = set(self._slots)
        self.input = next(i.name for i in graph.input if i.name not in initialised)
        self.nodes: list[tuple[str, list[str], list[str], dict[str, Any]]] = []
        for number, node in enumerate(graph.node):
            attributes = _attributes(node)
            if node.op_type == "Constant":
                self._hold(f"c{number}", node.output[0], _constant(attributes))
                continue
            self.nodes.append((node.op_type, list(node.input), list(node.output), attributes))
        self.training = False

    def _hold(self, slot: str, name: str, array: np.ndarray) -> None:
        value = torch.as_tensor(np.array(array))
        if value.is_floating_point():
            self.weights[slot] = torch.nn.Parameter(value, requires_grad=False)
        else:
            self.register_buffer(f"k_{slot}", value)
        self._slots[name] = slot

    def _value(self, name: str) -> torch.Tensor:
        slot = self._slots[name]
        if slot in self.weights:
            weight: torch.Tensor = self.weights[slot]
            return weight
        buffer: torch.Tensor = getattr(self, f"k_{slot}")
        return buffer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        env: dict[str, Any] = {self.input: x}
        for name in self._slots:
            env[name] = self._value(name)
        for op, inputs, outputs, attributes in self.nodes:
            args = [env[i] if i else None for i in inputs]
            env[outputs[0]] = _OPS[op](args, attributes, self.opset)
        out = env[self.output]
        assert isinstance(out, torch.Tensor)
        return out


def _constant(attributes: dict[str, Any]) -> np.ndarray:
    from onnx import numpy_helper

    if "value" in attributes:
        return np.asarray(numpy_helper.to_array(attributes["value"]))
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                       ("value_int", np.int64), ("value_ints", np.int64)):
        if key in attributes:
            return np.asarray(attributes[key], dtype=dtype)
    raise UnsupportedModelError("model", "a Constant must hold a tensor, float(s) or int(s)",
                                sorted(attributes))


def onnx_to_torch(model: Any, output: str | None = None) -> OnnxModule:
    """``model`` (an ``onnx.ModelProto``) as a torch module in eval mode.

    Parameters
    ----------
    model:
        The ONNX model; :func:`convertible` must return ``None`` for it.
    output:
        The output the module returns (default: the graph's first).

    Raises
    ------
    UnsupportedModelError
        Naming the operator that does not convert.
    """
    return OnnxModule(model, output)

