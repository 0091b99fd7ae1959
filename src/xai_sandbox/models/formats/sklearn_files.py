"""scikit-learn estimators and pipelines saved by skops: loaded only when every type in
the file is trusted (skops' own check), never by unpickling."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xai_sandbox.errors import InvalidInputError, UnsupportedModelError

__all__ = ["load_skops"]


def load_skops(path: Path, trusted: Sequence[str] = ()) -> tuple[Any, tuple[str, ...]]:
    """The estimator in a ``.skops`` file and the extra types trusted to load it.

    skops trusts scikit-learn's, NumPy's and SciPy's own types; any other type in the file
    (a custom class, a function, anything a stranger could use to run code) is refused
    with the list of those types, unless the caller names it in ``trusted`` after
    reviewing it.
    """
    import skops.io

    if isinstance(trusted, str) or not all(isinstance(t, str) for t in trusted):
        raise InvalidInputError("trusted", "must be a list of type names", trusted)
    try:
        untrusted = skops.io.get_untrusted_types(file=path)
    except Exception as exc:  # a zip that is not a skops file raises from several layers
        raise UnsupportedModelError("model", "must be a file saved by skops.io.dump "
                                    f"({type(exc).__name__})", path.name) from exc
    refused = sorted(set(untrusted) - set(trusted))
    if refused:
        raise UnsupportedModelError(
            "model", "holds types skops does not trust; review them and pass them as "
            "trusted types to load the file", refused)
    try:
        estimator = skops.io.load(path, trusted=list(untrusted))
    except Exception as exc:
        raise UnsupportedModelError("model", "must load with skops "
                                    f"({type(exc).__name__}: {str(exc)[:160]})",
                                    path.name) from exc
    if not callable(getattr(estimator, "predict", None)):
        raise UnsupportedModelError("model", "must be an estimator with predict()",
                                    type(estimator).__name__)
    return estimator, tuple(sorted(untrusted))
