"""PyTorch models from files: ``torch.export`` programs (``.pt2``) and TorchScript
modules, the latter with their weights optionally from a safetensors file.

Neither format unpickles arbitrary objects: an exported program is a graph of ATen
operators with tensor weights, TorchScript a restricted language run by torch's own
interpreter, and safetensors holds nothing but tensors.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from xai_sandbox.errors import InvalidInputError, UnsupportedModelError
from xai_sandbox.models.adapters import TorchAdapter

__all__ = ["ExportedAdapter", "load_torch_export", "load_torchscript"]


class ExportedAdapter(TorchAdapter):
    """A module loaded from a file; its fingerprint is the file's SHA-256.

    An exported program fixes the module's mode when it is exported (export in eval
    mode), and refuses ``eval()``; so its training flag is not checked here.
    """

    def __init__(self, module: torch.nn.Module, *, sha256: str, exported: bool,
                 output_space: str = "logit") -> None:
        super().__init__(module, output_space=output_space)
        self.exported = exported
        self.source_sha256 = sha256

    def torch_module(self) -> torch.nn.Module:
        return self.module if self.exported else super().torch_module()


def load_torch_export(path: Path, sha256: str, output_space: str = "logit"
                      ) -> ExportedAdapter:
    """A ``torch.export`` program saved by ``torch.export.save``."""
    try:
        program = torch.export.load(str(path))
    except Exception as exc:  # torch raises RuntimeError, KeyError or ValueError here
        raise UnsupportedModelError("model", "must be a program saved by torch.export.save "
                                    f"({type(exc).__name__})", path.name) from exc
    return ExportedAdapter(program.module(), sha256=sha256, exported=True,
                           output_space=output_space)


def load_torchscript(path: Path, sha256: str, weights: Path | None = None,
                     output_space: str = "logit") -> ExportedAdapter:
    """A TorchScript module; with ``weights``, its parameters are replaced by the tensors of
    that safetensors file (every name must match: a missing or extra one is refused)."""
    with warnings.catch_warnings():
        # torch 2.9+ deprecates TorchScript in favour of torch.export; loading is still
        # supported, and models exported before then arrive as TorchScript.
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            module: Any = torch.jit.load(  # type: ignore[no-untyped-call]
                str(path), map_location="cpu")
        except Exception as exc:
            raise UnsupportedModelError("model", "must be a module saved by torch.jit.save "
                                        f"({type(exc).__name__})", path.name) from exc
    if weights is not None:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(weights), device="cpu")
        except (SafetensorError, OSError) as exc:
            raise InvalidInputError("weights", "must be a safetensors file", weights.name
                                    ) from exc
        try:
            module.load_state_dict(tensors, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0][:200]
            raise InvalidInputError("weights", "must hold exactly the module's tensors "
                                    f"({first})", weights.name) from exc
    module.eval()
    return ExportedAdapter(module, sha256=sha256, exported=False, output_space=output_space)
