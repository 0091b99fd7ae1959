"""``xai-sandbox``: a thin command line over the library (one module per command group)."""

from xai_sandbox.cli import (
    accounts,
    audit,
    batch,
    explaining,
    models,
    monitoring,
    schema,
    serve,
    worker,
)
from xai_sandbox.cli.common import app

__all__ = ["accounts", "app", "audit", "batch", "explaining", "models", "monitoring", "schema",
           "serve", "worker"]
