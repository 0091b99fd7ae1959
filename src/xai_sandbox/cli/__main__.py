"""``python -m xai_sandbox.cli``."""

from xai_sandbox.cli import app

app()
