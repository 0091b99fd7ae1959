"""``xai-sandbox``: a thin command line over the library (one module per command group)."""

from xai_sandbox.cli import accounts, audit, explaining, models, monitoring, schema, serve
from xai_sandbox.cli.common import app

__all__ = ["accounts", "app", "audit", "explaining", "models", "monitoring", "schema", "serve"]
