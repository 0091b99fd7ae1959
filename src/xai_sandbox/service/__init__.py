"""The REST service: FastAPI over the library (``xai-sandbox serve``)."""

from xai_sandbox.service.app import create_app

__all__ = ["create_app"]
