"""The hook sandbox: watch a model's layers without changing the model.

:class:`HookSandbox` is a context manager. On entry it registers a forward hook and a full
backward hook on each chosen layer; on exit, also when the forward pass raised, it removes
every one of them. Hooks only copy what passes through (they return ``None``), gradients are
taken with ``torch.autograd.grad`` so no parameter's ``.grad`` is touched, and the model's
train/eval mode is never switched: weights, fingerprint and outputs are bitwise identical
with and without the sandbox.

:func:`intervene` is the same mechanism for methods that *change* what flows through a
layer (activation patching, splicing a sparse autoencoder in): each :class:`Intervention`
names a module, whether its input or its output is meant, and a transform that returns the
replacement (or ``None`` to only read it). The weights are never touched, and every hook
is removed on leaving the ``with`` block, also when the forward pass raised.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.hooks import RemovableHandle

from xai_sandbox.errors import InvalidInputError, InvalidTargetError, NotDifferentiableError
from xai_sandbox.models.adapters import model_errors

__all__ = ["HookSandbox", "Intervention", "LayerRecord", "intervene", "select_layers"]

LayerSelector = str | Sequence[str] | type[torch.nn.Module] | tuple[type[torch.nn.Module], ...]
_DEFAULT_TYPES = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)
Transform = Callable[[torch.Tensor], torch.Tensor | None]
HookPoint = Literal["input", "output"]
# The keyword names under which a block or a projection may receive its hidden states.
_HIDDEN_KEYWORDS = ("hidden_states", "input", "x")


def select_layers(module: torch.nn.Module,
                  layers: LayerSelector | None) -> dict[str, torch.nn.Module]:
    """Resolve a layer selector to ``{name: module}`` in model order.

    ``None`` or ``"conv_linear"``: every Conv and Linear layer; a name or a list of names;
    a module type or a tuple of types.
    """
    named = dict(module.named_modules())
    chosen: dict[str, torch.nn.Module]
    if layers is None or layers == "conv_linear":
        chosen = {n: m for n, m in named.items() if isinstance(m, _DEFAULT_TYPES)}
    elif isinstance(layers, type) or (isinstance(layers, tuple) and layers
                                      and all(isinstance(t, type) for t in layers)):
        kinds = layers if isinstance(layers, tuple) else (layers,)
        chosen = {n: m for n, m in named.items() if isinstance(m, kinds)}
    else:
        names = [layers] if isinstance(layers, str) else list(layers)
        unknown = [n for n in names if not isinstance(n, str) or n not in named]
        if unknown:
            raise InvalidInputError("layers", "must name submodules of the model "
                                    f"(for example {list(named)[1:6]})", unknown)
        chosen = {str(n): named[str(n)] for n in names}
    if not chosen:
        raise InvalidInputError("layers", "selected no layer of the model", layers)
    return chosen


class _Hooks:
    """The handles of registered hooks, removed together (the one place hooks are made)."""

    def __init__(self) -> None:
        self._handles: list[RemovableHandle] = []

    def forward(self, module: torch.nn.Module, hook: Callable[..., Any]) -> None:
        self._handles.append(module.register_forward_hook(hook))

    def forward_pre(self, module: torch.nn.Module, hook: Callable[..., Any]) -> None:
        self._handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))

    def backward(self, module: torch.nn.Module, hook: Callable[..., Any]) -> None:
        self._handles.append(module.register_full_backward_hook(hook))

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


@dataclass(frozen=True)
class Intervention:
    """One point of a forward pass and what happens to the tensor there.

    Attributes
    ----------
    module:
        The module whose input or output is meant.
    transform:
        Called with the tensor on every forward through ``module``; a returned tensor
        replaces it, ``None`` leaves it as it is (a recording).
    at:
        ``"output"``: the module's output (its first element when the module returns a
        tuple); ``"input"``: its hidden states, the first positional argument when it is a
        tensor, else the ``hidden_states``, ``input`` or ``x`` keyword argument.
    """

    module: torch.nn.Module
    transform: Transform
    at: HookPoint = "output"


def _hidden_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[torch.Tensor, str | None]:
    """The hidden states a module was called with, and the keyword they came under."""
    if args and isinstance(args[0], torch.Tensor):
        return args[0], None
    for name in _HIDDEN_KEYWORDS:
        value = kwargs.get(name)
        if isinstance(value, torch.Tensor):
            return value, name
    raise InvalidInputError("model", "a module intervened on at its input must receive its "
                            "hidden states as the first argument or as 'hidden_states'",
                            sorted(kwargs))


def _input_hook(transform: Transform) -> Callable[..., Any]:
    def hook(_m: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
             ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        hidden, name = _hidden_of(args, kwargs)
        new = transform(hidden)
        if new is None:
            return None
        if name is None:
            return (new, *args[1:]), kwargs
        return args, {**kwargs, name: new}
    return hook


def _output_hook(transform: Transform) -> Callable[..., Any]:
    def hook(_m: torch.nn.Module, _args: tuple[Any, ...], output: Any) -> Any:
        first = output[0] if isinstance(output, tuple) else output
        new = transform(first)
        if new is None:
            return None
        return (new, *output[1:]) if isinstance(output, tuple) else new
    return hook


@contextlib.contextmanager
def intervene(interventions: Iterable[Intervention]) -> Iterator[None]:
    """Apply the interventions to every forward pass inside the ``with`` block.

    One hook per intervention; all of them are removed on exit, also when registering one
    of them, the forward pass or the caller's block raised.
    """
    hooks = _Hooks()
    try:
        for item in interventions:
            if not isinstance(item, Intervention) or item.at not in ("input", "output"):
                raise InvalidInputError("interventions", "must be Intervention objects with "
                                        "at='input' or 'output'", item)
            if item.at == "input":
                hooks.forward_pre(item.module, _input_hook(item.transform))
            else:
                hooks.forward(item.module, _output_hook(item.transform))
        yield
    finally:
        hooks.remove()


@dataclass(frozen=True)
class LayerRecord:
    """What one layer saw in the last recorded pass (its first call, if called twice)."""

    name: str
    activation: torch.Tensor
    gradient: torch.Tensor | None

    def sensitivity(self) -> np.ndarray:
        """Per-sample sum of gradient x activation over the layer's units."""
        if self.gradient is None:
            raise InvalidInputError("record_gradients", "must be true to compute sensitivity",
                                    False)
        prod = (self.gradient * self.activation).reshape(self.activation.shape[0], -1)
        return prod.sum(dim=1).double().numpy()


class HookSandbox:
    """Record activations and gradients of chosen layers inside a ``with`` block.

    Parameters
    ----------
    module:
        The model; never modified.
    layers:
        Which layers: ``None`` (every Conv/Linear), a name, a list of names, or a type.
    record_gradients:
        Also register full backward hooks and record each layer's output gradient.

    Examples
    --------
    >>> with HookSandbox(model, layers=torch.nn.Linear) as box:   # doctest: +SKIP
    ...     box.run(x, target=1)
    ...     box.layer_sensitivity()
    """

    def __init__(self, module: torch.nn.Module, layers: LayerSelector | None = None, *,
                 record_gradients: bool = True) -> None:
        self.module = module
        self.layers = layers
        self.record_gradients = record_gradients
        self._hooks = _Hooks()
        self._acts: dict[str, torch.Tensor] = {}
        self._grads: dict[str, torch.Tensor] = {}
        self._chosen: dict[str, torch.nn.Module] = {}
        self._active = False

    # ------------------------------------------------------------------ context
    def __enter__(self) -> HookSandbox:
        if self._active:
            raise InvalidInputError("sandbox", "is already active (not re-entrant)", True)
        self._chosen = select_layers(self.module, self.layers)
        self._register()
        self._active = True
        return self

    def _register(self) -> None:
        try:
            for name, layer in self._chosen.items():
                self._hooks.forward(layer, self._forward_hook(name))
                if self.record_gradients:
                    self._hooks.backward(layer, self._backward_hook(name))
        except BaseException:
            self._remove()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._remove()
        self._active = False

    def _remove(self) -> None:
        self._hooks.remove()

    def _forward_hook(self, name: str) -> Any:
        def hook(_m: torch.nn.Module, _inp: Any, out: Any) -> None:
            if name not in self._acts and isinstance(out, torch.Tensor):
                self._acts[name] = out.detach().clone()
        return hook

    def _backward_hook(self, name: str) -> Any:
        def hook(_m: torch.nn.Module, _gin: Any, gout: Any) -> None:
            if gout and isinstance(gout[0], torch.Tensor):
                self._grads[name] = gout[0].detach().clone()
        return hook

    # ------------------------------------------------------------------ work
    def run(self, inputs: torch.Tensor, target: int | Sequence[int] | torch.Tensor) -> torch.Tensor:
        """One forward pass, and a backward pass of the target scores if gradients are recorded.

        Returns the model output (detached). Earlier records are cleared first.
        """
        if not self._active:
            raise InvalidInputError("sandbox", "must be entered with 'with' before run()", False)
        self._acts.clear()
        self._grads.clear()
        x = inputs.detach()
        if self.record_gradients and x.is_floating_point():
            x = x.clone().requires_grad_(True)
        with model_errors(tuple(x.shape)), torch.set_grad_enabled(self.record_gradients):
            out: torch.Tensor = self.module(x)
            if not self.record_gradients:
                return out.detach()
            idx = torch.as_tensor(target, dtype=torch.long).reshape(-1)
            if idx.numel() == 1:
                idx = idx.expand(out.shape[0])
            if idx.numel() != out.shape[0] or int(idx.min()) < 0 or int(idx.max()) >= out.shape[1]:
                raise InvalidTargetError("target", f"must be in [0, {out.shape[1]}) per row",
                                         idx.tolist())
            score = out.gather(1, idx[:, None].to(out.device)).sum()
            wrt = [x] if x.requires_grad else [p for p in self.module.parameters()
                                               if p.requires_grad]
            if not wrt:
                raise NotDifferentiableError("inputs", "nothing to differentiate: the inputs "
                                             "are not floating point and no parameter "
                                             "requires grad", str(x.dtype))
            # autograd.grad returns the gradients instead of accumulating into .grad.
            torch.autograd.grad(score, wrt, allow_unused=True)
        return out.detach()

    def records(self) -> dict[str, LayerRecord]:
        """The layers' records from the last :meth:`run`, in model order."""
        return {name: LayerRecord(name, self._acts[name], self._grads.get(name))
                for name in self._chosen if name in self._acts}

    def layer_sensitivity(self) -> dict[str, np.ndarray]:
        """Per layer, per sample: sum of gradient x activation (from the last run)."""
        return {name: rec.sensitivity() for name, rec in self.records().items()}

    def layer_attributions(self, inputs: torch.Tensor, target: int | Sequence[int],
                           baselines: torch.Tensor | None = None,
                           n_steps: int = 50) -> dict[str, np.ndarray]:
        """Layer integrated gradients (Captum) of each chosen layer, per sample.

        The attribution of a layer's units is summed to one number per sample; by
        completeness it approaches f(x) - f(baseline) for every layer the whole signal
        flows through.
        """
        from captum.attr import LayerIntegratedGradients

        if not isinstance(n_steps, int) or n_steps < 2:
            raise InvalidInputError("n_steps", "must be an integer >= 2", n_steps)
        if not self._active:
            raise InvalidInputError("sandbox", "must be entered with 'with' first", False)
        out: dict[str, np.ndarray] = {}
        # Captum registers and removes hooks of its own; ours are off meanwhile.
        self._remove()
        try:
            with model_errors(tuple(inputs.shape)):
                for name, layer in self._chosen.items():
                    lig = LayerIntegratedGradients(self.module, layer)
                    attr = lig.attribute(inputs, baselines=baselines, target=target,
                                         n_steps=n_steps)
                    if isinstance(attr, tuple):
                        attr = attr[0]
                    out[name] = attr.detach().reshape(attr.shape[0], -1).sum(dim=1).double() \
                        .numpy()
        finally:
            self._register()
        return out
