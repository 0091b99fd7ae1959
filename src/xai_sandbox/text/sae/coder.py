"""The sparse coder protocol, the sites, argument checks and the TopK SAE."""

from __future__ import annotations

from typing import Any, Literal, Protocol, cast

import torch

from xai_sandbox.errors import InvalidInputError
from xai_sandbox.text import checks
from xai_sandbox.text.model import TextModel

__all__ = ["SparseCoder", "TopKSAE"]


Site = Literal["resid_pre", "resid_post", "attn_out", "mlp_out"]
Pool = Literal["cls", "mean", "last"]
Positions = Literal["all", "cls", "last"]

SITES: tuple[str, ...] = ("resid_pre", "resid_post", "attn_out", "mlp_out")
POOLS: tuple[str, ...] = ("cls", "mean", "last")
POSITIONS: tuple[str, ...] = ("all", "cls", "last")
SAE_EXTRA = "`pip install 'xai-sandbox[sae]'` (SAELens)"


class SparseCoder(Protocol):
    """What the splice needs of an SAE: widths, ``encode`` and ``decode``.

    :class:`TopKSAE` and :class:`PretrainedSAE` are sparse coders.
    """

    @property
    def d_in(self) -> int: ...

    @property
    def n_features(self) -> int: ...

    def encode(self, x: torch.Tensor) -> torch.Tensor: ...

    def decode(self, f: torch.Tensor) -> torch.Tensor: ...


# ---------------------------------------------------------------------------- validation
def as_coder(sae: Any) -> SparseCoder:
    for attr in ("encode", "decode"):
        if not callable(getattr(sae, attr, None)):
            raise InvalidInputError("sae", f"must have an {attr}() method (a TopKSAE or a "
                                    "PretrainedSAE)", type(sae).__name__)
    for attr in ("d_in", "n_features"):
        if not isinstance(getattr(sae, attr, None), int):
            raise InvalidInputError("sae", f"must have an integer {attr}", type(sae).__name__)
    return cast(SparseCoder, sae)


def coder_dtype(sae: SparseCoder) -> torch.dtype:
    if isinstance(sae, torch.nn.Module):
        for p in sae.parameters():
            return p.dtype
    return torch.float32


def check_site(model: TextModel, sae: SparseCoder | None, layer: Any, site: Any) -> None:
    if not isinstance(model, TextModel):
        raise InvalidInputError("model", "must be a TextModel", type(model).__name__)
    checks.choice("site", site, SITES)
    checks.integer("layer", layer, 0, model.blocks.n_layers - 1)
    width = model.blocks.hidden_size
    if sae is not None and sae.d_in != width:
        raise InvalidInputError("sae", f"its input width must be the model's width at the "
                                f"site ({width})", sae.d_in)


# ---------------------------------------------------------------------------- the SAE
class TopKSAE(torch.nn.Module):
    """A TopK sparse autoencoder.

    ``f = ReLU(TopK_k(W_enc^T (x - b_dec) + b_enc))`` keeps the ``k`` largest
    pre-activations of each row (and only the positive ones), and
    ``x_hat = f W_dec + b_dec`` decodes it. ``W_dec`` is stored ``(n_features, d_in)`` as in
    SAELens: row ``i`` is feature ``i``'s direction (a column of the maths' ``W_dec``), kept
    at unit norm by the trainer. ``W_enc`` is ``(d_in, n_features)``.

    Parameters
    ----------
    d_in:
        Width of the activations.
    n_features:
        Number of features (the dictionary size).
    k:
        Number of features kept per row.
    random_state:
        Seed of the initial directions (random unit vectors; the encoder starts as the
        decoder's transpose).
    """

    def __init__(self, d_in: int, n_features: int, k: int, *, random_state: int = 0) -> None:
        super().__init__()
        checks.integer("d_in", d_in, 1)
        checks.integer("n_features", n_features, 1)
        checks.integer("k", k, 1, n_features)
        checks.integer("random_state", random_state, 0)
        gen = torch.Generator().manual_seed(int(random_state))
        directions = torch.randn(n_features, d_in, generator=gen)
        directions /= directions.norm(dim=1, keepdim=True).clamp_min(1e-12)
        self.W_dec = torch.nn.Parameter(directions)
        self.W_enc = torch.nn.Parameter(directions.T.clone())
        self.b_enc = torch.nn.Parameter(torch.zeros(n_features))
        self.b_dec = torch.nn.Parameter(torch.zeros(d_in))
        self.k = int(k)

    @property
    def d_in(self) -> int:
        return int(self.W_dec.shape[1])

    @property
    def n_features(self) -> int:
        return int(self.W_dec.shape[0])

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """``W_enc^T (x - b_dec) + b_enc`` over the last axis."""
        out: torch.Tensor = (x - self.b_dec) @ self.W_enc + self.b_enc
        return out

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations ``(..., n_features)``: at most ``k`` positive per row."""
        pre = self.pre_activations(x)
        values, index = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, index, torch.relu(values))

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``f W_dec + b_dec``."""
        out: torch.Tensor = f @ self.W_dec + self.b_dec
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Scale each decoder direction to unit norm."""
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))

    @torch.no_grad()
    def remove_parallel_gradient(self) -> None:
        """Drop the part of each decoder row's gradient that is parallel to the row (it
        would only change the norm, which :meth:`normalize_decoder` undoes)."""
        grad = self.W_dec.grad
        if grad is not None:
            grad -= (grad * self.W_dec).sum(dim=1, keepdim=True) * self.W_dec
