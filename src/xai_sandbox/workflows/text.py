"""Text inputs through the product: explanation, phrase anchors, alerts and the audit log.

:func:`align_text` matches a token attribution's *words* (sub-words summed, punctuation
stripped) against an anchor library's phrases. :class:`TextExplainer` serves the built-in
text models: it explains a text, aligns it with the model's anchors, raises an anchor-risk
alert after a streak (the same streaks as tabular decisions), and logs an entry that
commits to the text and the result, with a receipt.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from xai_sandbox.audit.canonical import canonical_json
from xai_sandbox.errors import InvalidInputError, NotFoundError
from xai_sandbox.semantics.anchors import AnchorLibrary, align_text, load_anchors
from xai_sandbox.workflows.decider import Decider

if TYPE_CHECKING:
    from xai_sandbox.text.model import TextModel

__all__ = ["BUILTIN_TEXT_MODELS", "TextExplainer", "align_text"]



def _minilm() -> TextModel:
    from xai_sandbox.text.catalog import minilm_sentiment

    return minilm_sentiment().model


# name -> (loader, anchor library)
BUILTIN_TEXT_MODELS: dict[str, tuple[Callable[[], TextModel], str | AnchorLibrary]] = {
    "minilm-sentiment": (_minilm, "customer-complaints"),
}
MAX_TEXT = 2000


@dataclass
class _Loaded:
    model: TextModel
    anchors: AnchorLibrary

    @property
    def key(self) -> str:
        return f"{self.model.model_id}@{self.model.version}"


class TextExplainer:
    """Explains texts with the built-in text models, on a decider's store and alerts."""

    def __init__(self, decider: Decider,
                 models: dict[str, tuple[Callable[[], TextModel], str | AnchorLibrary]]
                 | None = None) -> None:
        self.decider = decider
        self.models = dict(BUILTIN_TEXT_MODELS if models is None else models)
        self._loaded: dict[str, _Loaded] = {}
        self._lock = threading.Lock()

    def model(self, model_id: str) -> _Loaded:
        if model_id not in self.models:
            raise NotFoundError("model_id", f"must be a text model of {sorted(self.models)}",
                                model_id)
        with self._lock:
            if model_id not in self._loaded:
                loader, anchors = self.models[model_id]
                library = anchors if isinstance(anchors, AnchorLibrary) else load_anchors(
                    anchors)
                self._loaded[model_id] = _Loaded(loader(), library)
            return self._loaded[model_id]

    def explain(self, *, model_id: str, text: str, actor: str,
                method: str = "integrated_gradients", target: str | None = None
                ) -> dict[str, Any]:
        """Explain one text; log it; align it with the anchors; alert after a streak."""
        from xai_sandbox.text.attribution import TEXT_ATTRIBUTION_METHODS, token_attributions

        if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
            raise InvalidInputError("text", f"must be a non-empty text of at most {MAX_TEXT} "
                                    "characters", len(text) if isinstance(text, str) else text)
        if method not in TEXT_ATTRIBUTION_METHODS:
            raise InvalidInputError("method", f"must be one of "
                                    f"{list(TEXT_ATTRIBUTION_METHODS)}", method)
        loaded = self.model(model_id)
        e = token_attributions(loaded.model, text, method=method,  # type: ignore[arg-type]
                               target=target)
        matches = align_text(e, loaded.anchors)
        salt = secrets.token_bytes(32)
        commitment = hashlib.sha256(salt + text.encode("utf-8")).hexdigest()
        result = e.to_dict()
        digest = hashlib.sha256(canonical_json(result)).hexdigest()
        store = self.decider.store
        entry_id, leaf = store.record_adhoc(model_key=loaded.key, actor=actor,
                                            method=f"text:{method}",
                                            input_commitment=commitment,
                                            explanation_sha256=digest)
        anchors = [m.to_dict() for m in matches]
        alerts = self.decider.watch(loaded.key, entry_id, {"anchors": {"matches": anchors}})
        probs = np.exp(e.prediction[0] - e.prediction[0].max()) if e.output_space == \
            "logit" else None
        names = loaded.model.class_names
        return {
            "explanation_id": entry_id, "model": loaded.key,
            "fingerprint_sha256": loaded.model.fingerprint(),
            "prediction": {n: float(p) for n, p in zip(names, probs / probs.sum(),
                                                       strict=True)}
            if probs is not None else None,
            "target": e.parameters["target_class"][0], "method": method,
            "tokens": e.parameters["tokens"][0],
            "token_attributions": e.values[0][:len(e.parameters["tokens"][0])].tolist(),
            "words": e.parameters["words"][0],
            "completeness_error": e.completeness_error,
            "n_steps": e.parameters.get("n_steps"),
            "anchors": anchors, "hits": [m.anchor for m in matches if m.hit],
            "alerts_raised": alerts, "input_salt": base64.b64encode(salt).decode(),
            "explanation_sha256": digest, "library_versions": dict(e.library_versions),
            "receipt": store.receipt(leaf).to_dict()}
