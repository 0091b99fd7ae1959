"""Where a method runs, in what precision, and how much it evaluates per pass.

Three things every gradient and perturbation method shares:

- **Device placement** (:func:`resolve_device`): ``None`` keeps the model where it is (a
  model on ``cuda:0`` is explained there), ``"auto"`` takes a GPU when torch sees one,
  ``"cpu"``/``"cuda"``/``"cuda:N"`` name one; a device torch cannot reach is an error
  naming ``device``, never a silent fall back.
- **Memory-aware batching** (:class:`Batcher`): points per pass come from a memory budget
  (80% of the free device memory where CUDA reports it, a configurable budget on the CPU,
  ``XAI_SANDBOX_CPU_MEMORY_BUDGET_MB``, 2 GiB by default) divided by what one point costs,
  measured once per model and input shape by a probe pass that counts the bytes autograd
  keeps (:func:`point_bytes`). A pass that runs out of memory is retried with half the
  points, and the halving is recorded. Never a fixed batch of 1, never "everything".
- **Mixed precision** (:func:`autocast`, :data:`PRECISIONS`): ``float16``/``bfloat16``
  autocast for the forward and backward passes; the methods keep their sums in float32 and
  check them there (see ``integrated_gradients``).

Everything here runs on a CPU-only torch: CUDA is looked up, never required.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from xai_sandbox.errors import InvalidInputError

__all__ = ["CPU_BUDGET_ENV", "PRECISIONS", "Batcher", "autocast", "cpu_budget",
           "is_out_of_memory", "memory_budget", "parse_precision", "point_bytes",
           "resolve_device", "unwrapped"]

CPU_BUDGET_ENV = "XAI_SANDBOX_CPU_MEMORY_BUDGET_MB"
_DEFAULT_CPU_BUDGET_MB = 2048
# The share of free device memory a method may plan for: the allocator's fragmentation
# and the model's own workspace take the rest.
_DEVICE_SHARE = 0.8
#: Precisions a method may run its passes in; ``float32`` means no autocast.
PRECISIONS: dict[str, torch.dtype | None] = {
    "float32": None, "float16": torch.float16, "bfloat16": torch.bfloat16}

T = TypeVar("T")


def resolve_device(device: Any, model_device: torch.device) -> torch.device:
    """The device a method runs on: ``None`` is the model's own; ``"auto"`` a GPU when
    torch sees one (the model's device when it is already on one), else the CPU."""
    if device is None:
        return model_device
    if isinstance(device, torch.device):
        spec = str(device)
    elif isinstance(device, str):
        spec = device.strip().lower()
    else:
        raise InvalidInputError("device", "must be 'auto', 'cpu', 'cuda' or 'cuda:N'", device)
    if spec == "auto":
        if model_device.type != "cpu":
            return model_device
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or (spec.startswith("cuda:") and spec[5:].isdigit()):
        if not torch.cuda.is_available():
            raise InvalidInputError(
                "device", f"must be a device torch can reach; this torch {torch.__version__} "
                "sees no CUDA device (install a CUDA build of torch, see the README, or use "
                "'cpu' or 'auto')", device)
        index = int(spec[5:]) if ":" in spec else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise InvalidInputError("device", f"must be one of the {torch.cuda.device_count()} "
                                    "CUDA devices", device)
        return torch.device("cuda", index)
    raise InvalidInputError("device", "must be 'auto', 'cpu', 'cuda' or 'cuda:N'", device)


def parse_precision(dtype: Any) -> torch.dtype | None:
    """The autocast dtype for a ``dtype=`` argument (``None`` or ``"float32"``: none)."""
    if dtype is None:
        return None
    if isinstance(dtype, torch.dtype):
        for name, value in PRECISIONS.items():
            if value == dtype or (value is None and dtype == torch.float32):
                return PRECISIONS[name]
    if isinstance(dtype, str) and dtype in PRECISIONS:
        return PRECISIONS[dtype]
    raise InvalidInputError("dtype", f"must be one of {list(PRECISIONS)}", dtype)


def precision_name(dtype: torch.dtype | None) -> str:
    return "float32" if dtype is None else str(dtype).removeprefix("torch.")


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """Autocast to ``dtype`` on ``device`` (nothing for ``None``)."""
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def unwrapped(module: torch.nn.Module) -> torch.nn.Module:
    """The module a wrapper runs: ``DataParallel``/``DistributedDataParallel``'s
    ``.module``, ``torch.compile``'s ``_orig_mod``; the module itself otherwise. Its
    parameters and submodules are the wrapper's (hooks and layer names read them)."""
    seen = 0
    while seen < 8:
        inner = getattr(module, "_orig_mod", None)
        if inner is None and isinstance(module, (torch.nn.DataParallel, *_ddp_types())):
            inner = module.module
        if not isinstance(inner, torch.nn.Module):
            return module
        module, seen = inner, seen + 1
    return module


def _ddp_types() -> tuple[type, ...]:
    from torch.nn.parallel import DistributedDataParallel
    return (DistributedDataParallel,)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a device or host allocator running out of memory."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text
                                              or "can't allocate memory" in text)


def cpu_budget() -> int:
    """The CPU memory budget in bytes: ``XAI_SANDBOX_CPU_MEMORY_BUDGET_MB`` or 2 GiB."""
    raw = os.environ.get(CPU_BUDGET_ENV)
    if raw is None:
        return _DEFAULT_CPU_BUDGET_MB << 20
    try:
        mb = float(raw)
    except ValueError:
        mb = -1.0
    if not mb > 0:
        raise InvalidInputError(CPU_BUDGET_ENV, "must be a positive number of MiB", raw)
    return int(mb * (1 << 20))


def memory_budget(device: torch.device, budget: int | None = None) -> tuple[int, str]:
    """Bytes a method may plan one pass for on ``device``, and where the figure came
    from: ``budget`` when given; the free memory CUDA reports (times 0.8); the CPU
    budget (:func:`cpu_budget`)."""
    if budget is not None:
        if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1:
            raise InvalidInputError("memory_budget", "must be a positive number of bytes",
                                    budget)
        return budget, "given"
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free * _DEVICE_SHARE), "free device memory"
    return cpu_budget(), "cpu budget"


# Bytes per point, per module and input signature: the probe runs once.
_PROBED: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], int]] = (
    weakref.WeakKeyDictionary())


def point_bytes(owner: Any, key: tuple[Any, ...], probe: Callable[[int], Any],
                device: torch.device, fallback: int) -> int:
    """What one point of a pass costs in bytes, measured once per ``owner`` (the model)
    and ``key`` (input shape, dtype, device, precision).

    ``probe(k)`` runs the forward and backward pass of ``k`` points; the cost of one is
    the difference between two points and one, so the model's own weights (which every
    pass holds once) are not counted per point. On CUDA the allocator's peak is read;
    elsewhere the storages autograd saves for the backward pass are counted, twice (the
    activations and their gradients). ``fallback`` where nothing can be measured (a
    compiled graph that hides its saved tensors) and as the least a point costs.
    """
    cache = _PROBED.setdefault(owner, {}) if _weakrefable(owner) else {}
    if key in cache:
        return cache[key]
    measured = fallback
    try:
        one, two = _probe_bytes(probe, 1, device), _probe_bytes(probe, 2, device)
        measured = max(fallback, 2 * (two - one) if device.type != "cuda" else two - one)
    except Exception as exc:  # the probe is an estimate; its failure is not an error
        if is_out_of_memory(exc):
            raise
    cache[key] = measured
    return measured


def _probe_bytes(probe: Callable[[int], Any], k: int, device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        probe(k)
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - before)
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen.setdefault(storage.data_ptr(), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        probe(k)
    return sum(seen.values())


def _weakrefable(owner: Any) -> bool:
    try:
        weakref.ref(owner)
    except TypeError:
        return False
    return True


@dataclass
class Batcher:
    """Points per pass within a memory budget, halved on an out-of-memory error.

    ``budget`` bytes on ``device``; :meth:`run` evaluates ``total`` points in passes of
    ``budget // per_point`` (at least one) and records every pass in :attr:`passes` and
    every halving in :attr:`halvings`; :meth:`record` is the provenance.
    """

    device: torch.device
    budget: int
    source: str
    passes: list[int] = field(default_factory=list)
    halvings: int = 0

    @classmethod
    def for_device(cls, device: torch.device, budget: int | None = None) -> Batcher:
        value, source = memory_budget(device, budget)
        return cls(device, value, source)

    def size(self, per_point: int, total: int, cpu_cap: int | None = None) -> int:
        """Points per pass for points of ``per_point`` bytes: at least 1, at most
        ``total``, and on the CPU at most ``cpu_cap`` where given (the size past which a
        CPU gains no speed, only memory)."""
        size = min(total, self.budget // max(1, per_point))
        if cpu_cap is not None and self.device.type == "cpu":
            size = min(size, cpu_cap)
        return max(1, size)

    def run(self, total: int, size: int, step: Callable[[int, int], None]) -> None:
        """Call ``step(start, stop)`` over ``range(total)`` in passes of ``size``; a pass
        that runs out of memory is retried at half the size, down to one point."""
        chunk = max(1, size)
        start = 0
        while start < total:
            stop = min(total, start + chunk)
            try:
                step(start, stop)
            except Exception as exc:
                if not is_out_of_memory(exc) or stop - start == 1:
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                chunk = max(1, (stop - start) // 2)
                self.halvings += 1
                continue
            self.passes.append(stop - start)
            start = stop

    def call(self, size: int, attempt: Callable[[int], T]) -> T:
        """``attempt(size)`` for a library that batches itself (Captum's
        ``perturbations_per_eval``, ``internal_batch_size``): on an out-of-memory error
        it is called again with half the size."""
        while True:
            try:
                result = attempt(size)
            except Exception as exc:
                if not is_out_of_memory(exc) or size == 1:
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                size = max(1, size // 2)
                self.halvings += 1
                continue
            self.passes.append(size)
            return result

    def record(self) -> dict[str, Any]:
        """What the batching did, for the explanation's provenance: ``passes`` counts
        the passes :meth:`run` made and the calls :meth:`call` made (a library that
        batches itself makes several passes per call); ``largest_pass`` is the most
        points one pass (or one library pass) held."""
        return {"memory_budget_bytes": self.budget, "budget_source": self.source,
                "passes": len(self.passes), "largest_pass": max(self.passes, default=0),
                "oom_halvings": self.halvings}
