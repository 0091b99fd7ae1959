"""From attributions to reasons people can read: reason codes, impact levels, narratives."""

from xai_sandbox.semantics.reasons import (
    Reason,
    ReasonCatalogue,
    ReasonSet,
    check_reasons,
    load_catalogue,
    principal_reasons,
)

__all__ = ["Reason", "ReasonCatalogue", "ReasonSet", "check_reasons", "load_catalogue",
           "principal_reasons"]
