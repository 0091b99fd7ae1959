"""``xai-sandbox serve --demo``: the German credit models, one principal per role, and a
declined and an approved applicant, so every endpoint can be tried at once."""

from __future__ import annotations

import contextlib
from typing import Any

from xai_sandbox.errors import ConflictError
from xai_sandbox.service.deps import Decider
from xai_sandbox.store.accounts import Accounts
from xai_sandbox.store.store import Store

__all__ = ["CREDIT_LABELS", "DEMO_MODELS", "DEMO_PRINCIPALS", "builtin_spec", "setup_demo"]

CREDIT_LABELS = {"bad": {"en": "declined", "zh": "拒绝"},
                 "good": {"en": "approved", "zh": "批准"}}
_CARD = {"purpose": "consumer credit decisions (demo)",
         "training_data": "German credit (Statlog, UCI, CC BY 4.0), deterministic 80% split",
         "validation_status": "demo model: held-out accuracy recorded at training, not "
                              "independently validated",
         "data_sources": [{"en": "application form", "zh": "申请表"},
                          {"en": "bank's own account records", "zh": "本行账户记录"}],
         "known_limits": ["trained on 800 applicants from 1970s Germany",
                          "attributions are against a typical applicant of the training "
                          "data"]}
DEMO_MODELS: list[dict[str, Any]] = [
    {"model_id": "credit", "version": "3",
     "source": {"kind": "builtin", "name": "german-credit-lightgbm"},
     "policy": {"methods": ["tree_shap"], "adverse_class": "bad",
                "outcome_labels": CREDIT_LABELS},
     "card": _CARD, "anchors": "german-credit"},
    {"model_id": "credit-mlp", "version": "1",
     "source": {"kind": "builtin", "name": "german-credit-mlp"},
     "policy": {"methods": ["exact_shapley", "integrated_gradients"],
                "adverse_class": "bad", "outcome_labels": CREDIT_LABELS},
     "card": _CARD, "anchors": "german-credit"},
]


def builtin_spec(name: str) -> dict[str, Any] | None:
    """The spec that serves a built-in credit model under its own name (version 1, the
    demo's policy and card), or ``None`` for a name that is not one."""
    for spec in DEMO_MODELS:
        if spec["source"]["name"] == name:
            return {**spec, "model_id": name, "version": "1"}
    return None


# name -> (roles, subject id)
DEMO_PRINCIPALS: dict[str, tuple[list[str], str | None]] = {
    "olivia-operator": (["operator"], None),
    "rita-reviewer": (["reviewer"], None),
    "carl-compliance": (["compliance_officer"], None),
    "aude-auditor": (["auditor"], None),
    "adam-admin": (["admin"], None),
    "alice": (["subject"], "applicant-alice"),
    "bob": (["subject"], "applicant-bob"),
}


def setup_demo(store: Store) -> dict[str, Any]:
    """Register the demo models and principals; returns fresh keys and the demo
    decisions (a new key per principal on every call)."""
    from xai_sandbox.demos.credit import credit_models

    decider = Decider(store)
    for spec in DEMO_MODELS:
        decider.register(spec)
    accounts = Accounts(store.engine, store.writer)
    keys = {}
    for name, (roles, subject_id) in DEMO_PRINCIPALS.items():
        ref = store.subject_ref(subject_id) if subject_id else None
        with contextlib.suppress(ConflictError):  # made by an earlier --demo run
            accounts.create_principal(name, roles, subject_ref=ref)
        keys[name] = accounts.issue_key(name, "demo")
    rows = credit_models().data.rows
    decisions = {}
    for name, index in (("alice", 1), ("bob", 0)):
        subject_id = DEMO_PRINCIPALS[name][1]
        assert subject_id is not None
        if store.decisions_of(store.subject_ref(subject_id), limit=1):
            continue
        out = decider.decide(model_id="credit", subject_id=subject_id, features=rows[index],
                             case_ref=f"DEMO-{name.upper()}")
        decisions[name] = out.decision_id
    return {"keys": keys, "decisions": decisions}
