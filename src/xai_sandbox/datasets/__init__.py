"""Real data sets shipped with the package (no network)."""

from xai_sandbox.datasets.german_credit import GermanCredit, load_german_credit

__all__ = ["GermanCredit", "load_german_credit"]
