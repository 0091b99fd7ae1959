"""Text in the product: phrase anchors over words, streak alerts, the audit log, the
methods registry, the service endpoint."""

from __future__ import annotations

import numpy as np
import pytest

from tiny import KEYWORD, keyword_classifier
from xai_sandbox.audit.log import Receipt
from xai_sandbox.errors import InvalidInputError, NotFoundError, UnknownMethodError
from xai_sandbox.explainers import EXPLAINERS, available_methods
from xai_sandbox.explainers.base import REGISTRY
from xai_sandbox.monitor.alerts import list_alerts
from xai_sandbox.semantics.anchors import align_text, load_anchors
from xai_sandbox.settings import Settings
from xai_sandbox.store import Store
from xai_sandbox.text.attribution import token_attributions
from xai_sandbox.text.methods import TEXT_METHODS, TextMethod, text_method
from xai_sandbox.workflows import Decider
from xai_sandbox.workflows.text import TextExplainer

LIBRARY = {"version": "tiny-anchors/1", "anchors": [
    {"id": "planted", "label": {"en": "The planted word", "zh": "植入词"},
     "covers": {"phrases": [KEYWORD]}, "regulations": ["test rule 1"],
     "risk": {"kind": "share", "at": 0.5}},
    {"id": "bank-service", "label": {"en": "Bank service", "zh": "银行服务"},
     "covers": {"phrases": ["bank service", "staff"]}, "regulations": ["test rule 2"],
     "risk": {"kind": "share", "at": 0.5}}]}


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):  # type: ignore[no-untyped-def]
    return keyword_classifier(tmp_path_factory.mktemp("tok"))


def test_phrase_anchors_match_words_and_carry_the_attribution(classifier) -> None:
    library = load_anchors(LIBRARY)
    e = token_attributions(classifier, f"the bank service was {KEYWORD} today",
                           target="present")
    matches = {m.anchor: m for m in align_text(e, library)}
    assert matches["planted"].sensitivity > 0.9 and matches["planted"].hit
    assert matches["bank-service"].sensitivity < 0.1 and not matches["bank-service"].hit
    words = e.parameters["words"][0]
    total = sum(abs(w["score"]) for w in words)
    two_word = sum(abs(w["score"]) for w in words if w["text"] in ("bank", "service"))
    assert matches["bank-service"].sensitivity == pytest.approx(two_word / total)


def test_text_anchor_streak_raises_one_alert_and_logs_each_text(tmp_path, classifier) -> None:
    store = Store(Settings(data_dir=tmp_path, alert_streak=3))
    try:
        decider = Decider(store)
        text = TextExplainer(decider, models={"tiny": (lambda: classifier,
                                                       load_anchors(LIBRARY))})
        results = [text.explain(model_id="tiny", text=f"my {KEYWORD} loan was slow",
                                actor="olivia") for _ in range(3)]
        assert all(r["hits"] == ["planted"] for r in results)
        assert [bool(r["alerts_raised"]) for r in results] == [False, False, True]
        alerts = list_alerts(store)
        assert len(alerts) == 1 and alerts[0]["body"]["anchor"] == "planted"
        receipt = Receipt.from_dict(results[0]["receipt"])
        assert receipt.leaf_index >= 0 and results[0]["completeness_error"] <= 0.05
        assert results[0]["words"][1]["text"] == KEYWORD
        with pytest.raises(NotFoundError):
            text.explain(model_id="nope", text="x", actor="olivia")
        with pytest.raises(InvalidInputError, match="text"):
            text.explain(model_id="tiny", text=" ", actor="olivia")
        with pytest.raises(InvalidInputError, match="method"):
            text.explain(model_id="tiny", text="the bank", actor="olivia", method="magic")
    finally:
        store.close()


def test_every_text_method_is_registered_and_resolves() -> None:
    for name, method in TEXT_METHODS.items():
        assert REGISTRY[name] is method and issubclass(method, TextMethod), name
        assert method.family == "text" and name not in EXPLAINERS
    assert text_method("attention_rollout").needs == "eager attention"
    with pytest.raises(UnknownMethodError, match="must be one of"):
        text_method("nope")
    assert np.all([m.summary for m in TEXT_METHODS.values()])
    listed = {name: needs for name, needs, _ in available_methods("text")}
    assert listed == {name: m.needs for name, m in TEXT_METHODS.items()}
