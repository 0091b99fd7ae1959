"""Pretrained SAEs through SAELens (the optional ``sae`` extra), mapped to this package's sites."""

from __future__ import annotations

import dataclasses
import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from xai_sandbox.errors import InvalidInputError, UnsupportedModelError
from xai_sandbox.text import checks
from xai_sandbox.text.model import TextModel
from xai_sandbox.text.sae.coder import SAE_EXTRA, check_site

__all__ = ["PretrainedSAE", "SAESite", "load_pretrained_sae", "sae_site_from_config"]


# ---------------------------------------------------------------------------- SAELens
# TransformerLens centres every write to the residual stream (center_writing_weights) of
# models with LayerNorm; its activations are then the Hugging Face ones minus their mean
# over the width. RMSNorm models (Llama, Gemma, Mistral, Qwen) are left as they are.
_LAYERNORM_FAMILIES = ("gpt2", "pythia", "gpt-neo", "opt", "bloom", "tiny-stories",
                       "gelu-", "solu-", "attn-only", "distil")
_HOOK = re.compile(r"^blocks\.(\d+)\.hook_(resid_pre|resid_post|attn_out|mlp_out)$")


@dataclass(frozen=True)
class SAESite:
    """Where a pretrained SAE reads, in this module's terms, and how its inputs were made.

    Attributes
    ----------
    hook_name:
        The TransformerLens hook, e.g. ``blocks.8.hook_resid_pre``.
    layer, site:
        The same place for :func:`collect_activations` and :func:`spliced`:
        ``blocks.L.hook_resid_pre`` is ``layer=L, site="resid_pre"`` (``hidden_states[L]``).
    center:
        Subtract each activation's mean over the width before encoding (TransformerLens's
        ``center_writing_weights`` on LayerNorm models); :class:`PretrainedSAE` does it.
    prepend_bos:
        The SAE saw a BOS token first: prefix the tokenizer's BOS when the tokenizer does
        not add one (GPT-2's does not).
    context_size:
        Tokens per training sequence; positions beyond it are out of distribution.
    normalize_activations, apply_b_dec_to_input:
        SAELens's settings (applied inside its ``encode``; ``expected_average_only_in`` is
        folded into the weights when loading).
    model_name, dtype:
        The model the SAE was trained on, and the SAE's dtype.
    """

    hook_name: str
    layer: int
    site: str
    center: bool
    prepend_bos: bool | None
    context_size: int | None
    normalize_activations: str
    apply_b_dec_to_input: bool
    model_name: str | None
    dtype: str

    def collect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`collect_activations` and :func:`spliced`."""
        return {"layer": self.layer, "site": self.site}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _lookup(config: Mapping[str, Any], key: str) -> Any:
    if key in config and config[key] is not None:
        return config[key]
    metadata = config.get("metadata")
    if isinstance(metadata, Mapping):
        return metadata.get(key)
    return getattr(metadata, key, None) if metadata is not None else None


def sae_site_from_config(config: Mapping[str, Any], *, model: TextModel | None = None
                         ) -> SAESite:
    """Map an SAELens config (``cfg.to_dict()`` or the dict SAELens returns when loading)
    to an :class:`SAESite`.

    ``center`` follows TransformerLens's default processing: on when the model uses
    LayerNorm (read from ``model`` when given, else from the config's ``model_name``) unless
    ``model_from_pretrained_kwargs`` turns ``center_writing_weights`` off.
    """
    if not isinstance(config, Mapping):
        raise InvalidInputError("config", "must be a mapping (an SAELens config dict)",
                                type(config).__name__)
    hook = _lookup(config, "hook_name")
    found = _HOOK.match(str(hook)) if hook is not None else None
    if found is None:
        raise UnsupportedModelError("config", "hook_name must be blocks.L.hook_resid_pre, "
                                    "hook_resid_post, hook_attn_out or hook_mlp_out", hook)
    if _lookup(config, "hook_head_index") is not None:
        raise UnsupportedModelError("config", "SAEs on a single head are not supported",
                                    _lookup(config, "hook_head_index"))
    normalize = str(_lookup(config, "normalize_activations") or "none")
    if normalize in ("layer_norm", "constant_norm_rescale"):
        raise UnsupportedModelError("config", "per-token input normalisation (layer_norm, "
                                    "constant_norm_rescale) keeps state between SAELens's "
                                    "encode and decode; the splice cannot use it", normalize)
    kwargs = _lookup(config, "model_from_pretrained_kwargs") or {}
    model_name = _lookup(config, "model_name")
    if model is not None:
        layernorm = any(isinstance(m, torch.nn.LayerNorm)
                        for layer in model.blocks.layers for m in layer.modules())
    else:
        name = str(model_name or "").lower()
        layernorm = any(family in name for family in _LAYERNORM_FAMILIES)
    center = bool(layernorm and kwargs.get("center_writing_weights", True))
    context = _lookup(config, "context_size")
    bos = _lookup(config, "prepend_bos")
    apply_b_dec = _lookup(config, "apply_b_dec_to_input")
    return SAESite(hook_name=str(hook), layer=int(found.group(1)), site=found.group(2),
                   center=center, prepend_bos=None if bos is None else bool(bos),
                   context_size=None if context is None else int(context),
                   normalize_activations=normalize,
                   apply_b_dec_to_input=True if apply_b_dec is None else bool(apply_b_dec),
                   model_name=None if model_name is None else str(model_name),
                   dtype=str(_lookup(config, "dtype") or "float32"))


class PretrainedSAE(torch.nn.Module):
    """An SAE from another library (SAELens) with the site it reads.

    ``encode`` centres its input when ``site.center`` is set, then calls the wrapped SAE's
    ``encode``; ``decode`` calls its ``decode``. The splice's error term is taken against
    the model's own (uncentred) activation, so the splice stays exact.
    """

    def __init__(self, sae: Any, site: SAESite, *, d_in: int, n_features: int) -> None:
        super().__init__()
        if not (callable(getattr(sae, "encode", None)) and callable(getattr(sae, "decode",
                                                                            None))):
            raise InvalidInputError("sae", "must have encode() and decode()",
                                    type(sae).__name__)
        self.sae = sae
        self.site = site
        self._d_in = checks.integer("d_in", d_in, 1)
        self._n_features = checks.integer("n_features", n_features, 1)

    @property
    def d_in(self) -> int:
        return self._d_in

    @property
    def n_features(self) -> int:
        return self._n_features

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if self.site.center:
            x = x - x.mean(dim=-1, keepdim=True)
        out: torch.Tensor = self.sae.encode(x)
        return out

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.sae.decode(f)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def load_pretrained_sae(release: str, sae_id: str, *, model: TextModel | None = None,
                        device: str = "cpu", dtype: str = "float32") -> PretrainedSAE:
    """Load a pretrained SAE with SAELens (``pip install 'xai-sandbox[sae]'``).

    ``SAE.from_pretrained_with_cfg_and_sparsity(release, sae_id)`` loads it (downloading
    from the Hugging Face Hub unless cached); its config becomes the :class:`SAESite` of the
    returned wrapper: ``sae.site.collect_kwargs()`` gives the ``layer`` and ``site`` for
    :func:`collect_activations` and :func:`spliced`. Pass ``model`` to check the widths and
    to read whether the model uses LayerNorm (for centring).

    Example: ``load_pretrained_sae("gpt2-small-res-jb", "blocks.8.hook_resid_pre")`` reads
    ``layer=8, site="resid_pre"``, i.e. ``hidden_states[8]`` of the Hugging Face GPT-2,
    centred, with a BOS token first.
    """
    for name, value in (("release", release), ("sae_id", sae_id), ("device", device),
                        ("dtype", dtype)):
        if not isinstance(value, str) or not value:
            raise InvalidInputError(name, "must be a non-empty string", value)
    if model is not None and not isinstance(model, TextModel):
        raise InvalidInputError("model", "must be a TextModel or None", type(model).__name__)
    try:
        sae_lens = importlib.import_module("sae_lens")
    except ImportError as exc:
        raise InvalidInputError("extras", f"pretrained SAEs need {SAE_EXTRA}",
                                "sae_lens") from exc
    loader = getattr(sae_lens.SAE, "from_pretrained_with_cfg_and_sparsity", None)
    try:
        if loader is not None:
            sae, cfg, _ = loader(release, sae_id, device=device, dtype=dtype)
        else:  # SAELens < 6 returned the tuple from from_pretrained
            sae, cfg, _ = sae_lens.SAE.from_pretrained(release, sae_id, device=device)
    except ValueError as exc:
        raise InvalidInputError("sae_id", f"SAELens could not load it: {exc}",
                                f"{release}/{sae_id}") from exc
    config = dict(cfg)
    sae_cfg = getattr(sae, "cfg", None)
    if sae_cfg is not None and hasattr(sae_cfg, "to_dict"):
        config = {**sae_cfg.to_dict(), **{k: v for k, v in config.items() if v is not None}}
    site = sae_site_from_config(config, model=model)
    d_in, n_features = int(config["d_in"]), int(config["d_sae"])
    if model is not None:
        check_site(model, None, site.layer, site.site)
        if d_in != model.blocks.hidden_size:
            raise UnsupportedModelError("model", f"the SAE reads width {d_in}; this model's "
                                        "width differs", model.blocks.hidden_size)
    return PretrainedSAE(sae, site, d_in=d_in, n_features=n_features)
