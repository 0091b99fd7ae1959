"""Where trained demo models are cached: ``$XAI_SANDBOX_CACHE`` or ``~/.cache/xai-sandbox``."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir() -> Path:
    """The cache folder, created with owner-only permissions on first use."""
    root = Path(os.environ.get("XAI_SANDBOX_CACHE") or Path.home() / ".cache" / "xai-sandbox")
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    return root
