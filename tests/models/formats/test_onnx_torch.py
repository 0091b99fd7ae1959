"""ONNX graphs converted to torch: the same scores as onnxruntime and the same gradients as
the network they were exported from, operator by operator; graphs that do not convert say
which operator stops them."""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from xai_sandbox.errors import UnsupportedModelError
from xai_sandbox.models.formats.onnx_torch import SUPPORTED_OPS, convertible, onnx_to_torch

D = 5


def _export(module: torch.nn.Module, opset: int = 17) -> onnx.ModelProto:
    module.eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        torch.onnx.export(module, (torch.zeros(3, D),), buffer, dynamo=False,
                          opset_version=opset, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    return onnx.load_from_string(buffer.getvalue())


def _runtime(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.asarray(session.run(None, {name: x})[0])


class _Norm(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bn = torch.nn.BatchNorm1d(D)
        self.fc = torch.nn.Linear(D, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn(x))


class _Shapes(torch.nn.Module):
    """Reshape, Flatten, Concat, Transpose, a reduction and a clamp around two layers."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(D, 6)
        self.out = torch.nn.Linear(7, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x).reshape(-1, 2, 3).transpose(1, 2)
        h = torch.flatten(h, 1)
        m = h.mean(dim=1, keepdim=True)
        return self.out(torch.clamp(torch.cat([h, m], dim=1), -2.0, 2.0)).log_softmax(-1)


def _mlp(*layers: torch.nn.Module) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(D, 8), *layers, torch.nn.Linear(8, 2))


NETWORKS = {
    "relu_softmax": lambda: torch.nn.Sequential(_mlp(torch.nn.ReLU()), torch.nn.Softmax(-1)),
    "tanh_sigmoid": lambda: torch.nn.Sequential(_mlp(torch.nn.Tanh()), torch.nn.Sigmoid()),
    "leaky_dropout": lambda: _mlp(torch.nn.LeakyReLU(0.1), torch.nn.Dropout(0.3)),
    "gelu_elu": lambda: _mlp(torch.nn.GELU(), torch.nn.ELU()),
    "softplus_selu": lambda: _mlp(torch.nn.Softplus(), torch.nn.SELU()),
    "batchnorm": _Norm,
    "shapes": _Shapes,
}


def _network(key: str) -> torch.nn.Module:
    torch.manual_seed(sum(map(ord, key)))
    net = NETWORKS[key]()
    if key == "batchnorm":   # running statistics that are not the identity
        net.bn.running_mean.uniform_(-1, 1)
        net.bn.running_var.uniform_(0.5, 2)
    return net.eval()


@pytest.mark.parametrize("key", sorted(NETWORKS))
@pytest.mark.parametrize("opset", [11, 17])
def test_converted_graph_scores_as_onnxruntime_and_differentiates_as_the_network(key, opset):
    net = _network(key)
    model = _export(net, opset)
    assert convertible(model) is None
    module = onnx_to_torch(model)
    x = np.random.default_rng(opset).normal(size=(32, D)).astype(np.float32)
    with torch.no_grad():
        got = module(torch.as_tensor(x)).numpy()
    np.testing.assert_allclose(got, _runtime(model, x), atol=1e-5)
    # Gradients of one output with respect to the input equal the original network's.
    xs = [torch.as_tensor(x, dtype=torch.float32).requires_grad_() for _ in range(2)]
    for fn, xi in zip((net, module), xs, strict=True):
        fn(xi)[:, 1].sum().backward()
    assert xs[0].grad is not None and xs[1].grad is not None
    assert float(xs[0].grad.abs().max()) > 0
    np.testing.assert_allclose(xs[1].grad.numpy(), xs[0].grad.numpy(), atol=1e-5)


def test_converted_module_has_the_models_dtype_and_no_trainable_parameters():
    module = onnx_to_torch(_export(_network("relu_softmax")))
    params = list(module.parameters())
    assert params and all(p.dtype == torch.float32 and not p.requires_grad for p in params)
    assert not module.training


def _graph(nodes, initializers, out_shape, opset=13):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        initializer=[numpy_helper.from_array(v, k) for k, v in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def test_hand_built_graph_with_constants_gemm_transpose_and_unsqueeze():
    rng = np.random.default_rng(1)
    W = rng.normal(size=(3, 4)).astype(np.float32)   # Gemm with transB: x @ W.T
    nodes = [
        helper.make_node("Constant", [], ["half"], value=numpy_helper.from_array(
            np.array(0.5, dtype=np.float32))),
        helper.make_node("Gemm", ["x", "W", "b"], ["h"], transB=1, alpha=2.0, beta=0.5),
        helper.make_node("Mul", ["h", "half"], ["g"]),
        helper.make_node("Unsqueeze", ["g", "axes"], ["u"]),
        helper.make_node("Squeeze", ["u", "axes"], ["s"]),
        helper.make_node("Abs", ["s"], ["a"]),
        helper.make_node("Sqrt", ["a"], ["r"]),
        helper.make_node("ReduceSum", ["r", "axes"], ["t"], keepdims=1),
        helper.make_node("Sub", ["r", "t"], ["y"]),
    ]
    model = _graph(nodes, {"W": W, "b": rng.normal(size=3).astype(np.float32),
                           "axes": np.array([1], dtype=np.int64)}, ["n", 3])
    x = rng.normal(size=(10, 4)).astype(np.float32)
    with torch.no_grad():
        got = onnx_to_torch(model)(torch.as_tensor(x)).numpy()
    np.testing.assert_allclose(got, _runtime(model, x), atol=1e-5)


@pytest.mark.parametrize(("op", "domain", "named"), [
    ("Conv", "", "operator Conv has no PyTorch conversion"),
    ("LinearClassifier", "ai.onnx.ml", "operator ai.onnx.ml.LinearClassifier"),
])
def test_a_graph_that_does_not_convert_names_its_operator(op, domain, named):
    node = helper.make_node(op, ["x"], ["y"], domain=domain)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])])
    model = helper.make_model(graph)
    reason = convertible(model)
    assert reason is not None and named in reason
    with pytest.raises(UnsupportedModelError, match=op):
        onnx_to_torch(model)


def test_skl2onnx_tree_names_the_tree_operator():
    from skl2onnx import to_onnx
    from sklearn.tree import DecisionTreeClassifier

    X = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32)
    tree = DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, X[:, 0] > 0)
    model = to_onnx(tree, X[:1], options={id(tree): {"zipmap": False}})
    reason = convertible(model)
    assert reason is not None and "TreeEnsembleClassifier" in reason
    assert "TreeEnsembleClassifier" not in SUPPORTED_OPS
