"""The accelerator path on a CPU: device placement, memory-aware batching with its
out-of-memory fallback, mixed precision with its float32 guard, and compiled, wrapped and
inference-mode models (issue 19)."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import make_cnn, make_mlp
from xai_sandbox.errors import InvalidInputError
from xai_sandbox.explainers import explain
from xai_sandbox.models.accelerator import Batcher, memory_budget, parse_precision, resolve_device
from xai_sandbox.models.adapters import TorchAdapter

RNG = np.random.default_rng(7)
X_TAB = RNG.normal(size=(24, 6)).astype(np.float32)
X_IMG = RNG.normal(size=(2, 3, 12, 12)).astype(np.float32)
# Small enough that a pass holds a few points of these tiny models, never all of them.
SMALL = 6_000
LARGE = 1 << 34


def _pair(model, X, method, **params):
    """The method with a budget that forces many passes, and with one that takes all."""
    small = explain(model, X, method=method, memory_budget=SMALL, random_state=3, **params)
    large = explain(model, X, method=method, memory_budget=LARGE, random_state=3, **params)
    return small, large


@pytest.mark.parametrize(("method", "params"), [
    ("integrated_gradients", {"n_steps": 32}),
    ("integrated_gradients", {}),                     # adaptive Simpson
    ("smoothgrad", {"n_samples": 12}),                # over saliency
    ("occlusion", {}),
    ("exact_shapley", {}),
    ("permutation_shap", {"n_permutations": 20}),
])
def test_a_small_budget_forces_several_passes_with_the_same_result(method, params):
    model = make_mlp()
    small, large = _pair(model, X_TAB, method, **params)
    s, lg = small.parameters["batching"], large.parameters["batching"]
    assert s["memory_budget_bytes"] == SMALL
    assert s["budget_source"] == "given"
    assert s["passes"] >= lg["passes"]
    assert s["largest_pass"] < lg["largest_pass"]
    np.testing.assert_allclose(small.values, large.values, rtol=0, atol=1e-6)


def test_image_occlusion_windows_are_batched_to_the_budget():
    model = make_cnn()
    small, large = _pair(model, X_IMG, "occlusion", window=4, stride=4)
    assert small.parameters["batching"]["largest_pass"] < 9    # 9 windows per image
    assert large.parameters["batching"]["largest_pass"] == 9 or \
        large.parameters["batching"]["passes"] == 1
    np.testing.assert_allclose(small.values, large.values, rtol=0, atol=1e-6)


def test_image_ig_batched_equals_one_pass():
    model = make_cnn()
    small, large = _pair(model, X_IMG, "integrated_gradients", n_steps=24)
    assert small.parameters["batching"]["passes"] > 2
    np.testing.assert_allclose(small.values, large.values, rtol=0, atol=1e-6)


class RunsOutOfMemory(torch.nn.Module):
    """An MLP whose gradient passes of more than ``limit`` points raise CUDA's
    out-of-memory error (plain predictions run in any size)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.inner = make_mlp()
        self.limit = limit
        self.refused = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.shape[0] > self.limit:
            self.refused += 1
            raise torch.OutOfMemoryError(f"CUDA out of memory: {x.shape[0]} points")
        return self.inner(x)


@pytest.mark.parametrize("n_steps", [16, "auto"])
def test_out_of_memory_halves_the_pass_and_records_it(n_steps):
    model = RunsOutOfMemory(limit=7).eval()
    e = explain(model, X_TAB[:4], method="integrated_gradients", n_steps=n_steps,
                memory_budget=LARGE)
    plain = explain(model.inner, X_TAB[:4], method="integrated_gradients", n_steps=n_steps)
    record = e.parameters["batching"]
    assert model.refused >= 1
    assert record["oom_halvings"] >= model.refused
    assert record["largest_pass"] <= 7
    np.testing.assert_allclose(e.values, plain.values, rtol=0, atol=1e-6)


def test_a_library_that_batches_itself_is_halved_too():
    batcher = Batcher.for_device(torch.device("cpu"), 1 << 20)
    tried = []

    def attempt(size):
        tried.append(size)
        if size > 5:
            raise torch.OutOfMemoryError("out of memory")
        return size

    assert batcher.call(40, attempt) == 5
    assert tried == [40, 20, 10, 5]
    assert batcher.record()["oom_halvings"] == 3


def test_a_non_memory_error_is_not_retried():
    batcher = Batcher.for_device(torch.device("cpu"), 1 << 20)
    with pytest.raises(ValueError, match="boom"):
        batcher.run(10, 10, lambda a, b: (_ for _ in ()).throw(ValueError("boom")))
    assert batcher.halvings == 0


@settings(max_examples=25, deadline=None)
@given(total=st.integers(1, 500), size=st.integers(1, 600), limit=st.integers(1, 64))
def test_passes_cover_every_point_once_whatever_the_limit(total, size, limit):
    batcher = Batcher.for_device(torch.device("cpu"), 1 << 20)
    seen: list[int] = []

    def step(start, stop):
        if stop - start > limit:
            raise torch.OutOfMemoryError("out of memory")
        seen.extend(range(start, stop))

    batcher.run(total, size, step)
    assert seen == list(range(total))
    assert max(batcher.passes) <= limit
    assert sum(batcher.passes) == total


def test_the_cpu_budget_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("XAI_SANDBOX_CPU_MEMORY_BUDGET_MB", "3")
    assert memory_budget(torch.device("cpu")) == (3 << 20, "cpu budget")
    monkeypatch.setenv("XAI_SANDBOX_CPU_MEMORY_BUDGET_MB", "lots")
    with pytest.raises(InvalidInputError, match="XAI_SANDBOX_CPU_MEMORY_BUDGET_MB"):
        memory_budget(torch.device("cpu"))
    with pytest.raises(InvalidInputError, match="memory_budget"):
        explain(make_mlp(), X_TAB, method="saliency", memory_budget=0)


# --- device placement -------------------------------------------------------------------

def test_the_explanation_records_device_and_dtype():
    e = explain(make_mlp(), X_TAB, method="integrated_gradients", n_steps=8)
    assert e.parameters["device"] == "cpu"
    assert e.parameters["dtype"] == "float32"
    assert isinstance(e.values, np.ndarray)
    assert e.to_dict()["parameters"]["batching"]["passes"] >= 1


def test_devices_torch_cannot_reach_are_refused_by_name():
    with pytest.raises(InvalidInputError, match="device") as info:
        explain(make_mlp(), X_TAB, method="saliency", device="tpu")
    assert info.value.parameter == "device"
    if not torch.cuda.is_available():
        with pytest.raises(InvalidInputError, match="CUDA build of torch"):
            explain(make_mlp(), X_TAB, method="saliency", device="cuda")
        assert resolve_device("auto", torch.device("cpu")) == torch.device("cpu")
    else:   # a GPU machine explains there and returns numpy
        e = explain(make_mlp(), X_TAB, method="saliency", device="cuda")
        assert e.parameters["device"].startswith("cuda")
        assert isinstance(e.values, np.ndarray)


def test_a_model_that_is_not_torch_stays_on_the_cpu():
    from sklearn.linear_model import LogisticRegression

    y = (X_TAB[:, 0] > 0).astype(int)
    clf = LogisticRegression().fit(X_TAB, y)
    e = explain(clf, X_TAB[:3], method="exact_shapley", background=X_TAB[:5], device="cpu")
    assert e.parameters["device"] == "cpu"
    rule = "only torch models" if torch.cuda.is_available() else "CUDA build of torch"
    with pytest.raises(InvalidInputError, match=rule):
        explain(clf, X_TAB[:3], method="exact_shapley", background=X_TAB[:5], device="cuda")


def test_moving_to_another_device_copies_the_model_once():
    adapter = TorchAdapter(make_mlp(), input_kind="tabular")
    assert adapter.on(torch.device("cpu")) is adapter
    meta = adapter.on(torch.device("meta"))
    assert meta is adapter.on(torch.device("meta"))
    assert meta.device.type == "meta"
    assert adapter.device.type == "cpu"             # the caller's model did not move
    assert meta.fingerprint() == adapter.fingerprint()


# --- mixed precision ---------------------------------------------------------------------

def test_bfloat16_autocast_keeps_completeness_checked_in_float32():
    model = make_mlp(hidden=32)
    full = explain(model, X_TAB, method="integrated_gradients", n_steps=64)
    half = explain(model, X_TAB, method="integrated_gradients", n_steps=64,
                   dtype="bfloat16", tolerance=0.05)
    assert half.parameters["dtype"] == "bfloat16"
    gap = np.abs(half.prediction[np.arange(len(X_TAB)), half.target] - half.expected_value)
    fallback = half.parameters["precision_fallback_rows"]
    kept = np.setdiff1d(np.arange(len(X_TAB)), fallback)
    # The rows kept from the bfloat16 passes are within tolerance; the others are the
    # float32 result exactly (whose own quadrature error may exceed it: ReLU kinks).
    assert np.all(np.abs(half.delta[kept]) <= 0.05 * gap[kept] + 1e-6)
    np.testing.assert_allclose(half.values[fallback], full.values[fallback], atol=1e-6)
    # bfloat16 passes are not float32 passes: the rows it kept differ, a little.
    if kept.size:
        assert not np.allclose(half.values[kept], full.values[kept], atol=1e-7)
        np.testing.assert_allclose(half.values[kept], full.values[kept], atol=0.1)


def test_a_tolerance_no_bfloat16_row_meets_is_recomputed_in_float32_and_said():
    model = make_mlp(hidden=32)
    full = explain(model, X_TAB, method="integrated_gradients", n_steps=64)
    strict = explain(model, X_TAB, method="integrated_gradients", n_steps=64,
                     dtype="bfloat16", tolerance=1e-9)
    assert strict.parameters["precision_fallback_rows"] == list(range(len(X_TAB)))
    np.testing.assert_allclose(strict.values, full.values, rtol=0, atol=1e-6)
    np.testing.assert_allclose(strict.delta, full.delta, rtol=0, atol=1e-6)


def test_adaptive_ig_under_bfloat16_is_guarded_too():
    e = explain(make_cnn(), X_IMG, method="integrated_gradients", dtype="bfloat16",
                tolerance=0.02)
    full = explain(make_cnn(), X_IMG, method="integrated_gradients", tolerance=0.02)
    gap = np.abs(e.prediction[np.arange(2), e.target] - e.expected_value)
    fallback = e.parameters["precision_fallback_rows"]
    kept = np.setdiff1d(np.arange(2), fallback)
    assert np.all(np.abs(e.delta[kept]) <= 0.02 * gap[kept] + 1e-6)
    np.testing.assert_allclose(e.values[fallback], full.values[fallback], atol=1e-6)


def test_dtype_is_refused_where_it_would_not_be_guarded():
    with pytest.raises(InvalidInputError, match="float32 only") as info:
        explain(make_mlp(), X_TAB, method="saliency", dtype="float16")
    assert info.value.parameter == "dtype"
    with pytest.raises(InvalidInputError, match="dtype"):
        explain(make_mlp(), X_TAB, method="integrated_gradients", dtype="int8")
    assert parse_precision("float32") is None
    assert parse_precision(torch.bfloat16) is torch.bfloat16


# --- compiled, wrapped and inference-mode models -----------------------------------------

@pytest.fixture(scope="module")
def compiled_cnn():
    model = make_cnn()
    return model, torch.compile(model, backend="inductor")


# Inductor's CPU backend still calls torch.jit.script_method, deprecated in this torch.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_compiled_model_explains_like_its_original(compiled_cnn):
    model, compiled = compiled_cnn
    for method, params in [("integrated_gradients", {"n_steps": 16}), ("saliency", {}),
                           ("grad_cam", {"layer": "2"}), ("deeplift", {})]:
        ours = explain(compiled, X_IMG, method=method, **params)
        plain = explain(model, X_IMG, method=method, **params)
        np.testing.assert_allclose(ours.values, plain.values, rtol=1e-4, atol=1e-5)
        assert ours.model == plain.model       # one fingerprint, one set of layer names
    # The predictions are the compiled model's own outputs, bit for bit.
    with torch.no_grad():
        direct = compiled(torch.as_tensor(X_IMG)).double().numpy()
    e = explain(compiled, X_IMG, method="saliency")
    assert np.array_equal(e.prediction, direct)


def test_data_parallel_and_distributed_wrappers_explain_their_module():
    import torch.distributed as dist

    model = make_mlp()
    plain = explain(model, X_TAB, method="deeplift")
    dp = explain(torch.nn.DataParallel(model).eval(), X_TAB, method="deeplift")
    np.testing.assert_allclose(dp.values, plain.values, rtol=0, atol=1e-7)
    assert dp.model == plain.model
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0,
                            world_size=1)
    try:
        ddp = torch.nn.parallel.DistributedDataParallel(make_mlp()).eval()
        e = explain(ddp, X_TAB, method="integrated_gradients", n_steps=16)
        ref = explain(make_mlp(), X_TAB, method="integrated_gradients", n_steps=16)
        np.testing.assert_allclose(e.values, ref.values, rtol=0, atol=1e-7)
        with torch.no_grad():
            assert np.array_equal(e.prediction, ddp(torch.as_tensor(X_TAB)).double().numpy())
    finally:
        dist.destroy_process_group()


def test_an_inference_mode_caller_gets_gradients_all_the_same():
    model = make_mlp()
    plain = explain(model, X_TAB, method="integrated_gradients", n_steps=16)
    with torch.inference_mode():
        inside = explain(model, X_TAB, method="integrated_gradients", n_steps=16)
        assert torch.is_inference_mode_enabled()
    np.testing.assert_array_equal(inside.values, plain.values)
