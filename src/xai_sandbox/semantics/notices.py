"""What the person decided about reads, and the legal texts around it, in each locale.

The words are fixed here, not in the workflows that use them: the caveat for each
reliability level, the counterfactual disclaimer, the subject's rights, the review states,
the impact words and the regimes a report names by default. :func:`subject_text` composes
them with a report's reasons and counterfactuals into the adverse-action notice.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["CAVEAT_LOW", "CAVEAT_OK", "CAVEAT_QUALITY", "CAVEAT_WITHHELD", "CONFIRMED_BY_PERSON",
           "DECIDED_BY_PERSON", "DECIDING_KINDS", "DEFAULT_REGIMES", "DISCLAIMER", "IMPACT",
           "NO_CHANGE_FOUND", "REVIEW_STATUS", "RIGHTS", "subject_text"]

DISCLAIMER = {
    "en": "These are examples of changes that would have led the model to a different "
          "outcome. They are guidance, not a promise of approval: a new application is "
          "decided on its own facts.",
    "zh": "以下是会使模型得出不同结果的变化示例。它们仅供参考，并非批准承诺："
          "新的申请将根据其自身情况作出决定。",
}
CAVEAT_LOW = {
    "en": "Explanation reliability low: your application differs from the data the model "
          "learned from, so these reasons may describe the model less faithfully. You can "
          "ask for a human review.",
    "zh": "解释可靠性低：您的申请与模型学习所用的数据差异较大，这些理由可能不能准确反映模型。"
          "您可以申请人工复核。",
}
CAVEAT_QUALITY = {
    "en": "Explanation reliability low: our checks found that these reasons may not fully "
          "reflect how the model reached this decision. You can ask for a human review.",
    "zh": "解释可靠性低：我们的检查发现这些理由可能不能完全反映模型作出此决定的方式。"
          "您可以申请人工复核。",
}
CAVEAT_WITHHELD = {
    "en": "The automatic explanation of this decision did not pass our reliability checks, "
          "so it is not shown. A person is reviewing the decision and will explain it to "
          "you; the review and its due date are shown below.",
    "zh": "此决定的自动解释未通过我们的可靠性检查，因此不予显示。工作人员正在复核该决定，"
          "并将向您说明；复核状态及截止日期见下文。",
}
CAVEAT_OK = {
    "en": "These reasons are computed from the model that made the decision. They describe "
          "the model, not a judgement about you.",
    "zh": "这些理由由作出决定的模型计算得出，描述的是模型，而非对您个人的评价。",
}
RIGHTS = {
    "en": [("human_review", "You can ask for a person to review this decision."),
           ("contest", "You can express your point of view and contest the decision."),
           ("explanation", "You can ask for more detail about how the decision was made.")],
    "zh": [("human_review", "您可以要求由人工复核此决定。"),
           ("contest", "您可以陈述意见并对决定提出异议。"),
           ("explanation", "您可以要求进一步说明决定是如何作出的。")],
}
REVIEW_STATUS = {
    "en": {"not_required": "not requested", "pending": "pending", "confirmed": "confirmed",
           "overridden": "overridden", "reversed": "reversed"},
    "zh": {"not_required": "未申请", "pending": "处理中", "confirmed": "维持原决定",
           "overridden": "已改判", "reversed": "已撤销"},
}
IMPACT = {"en": {"HIGH": "high impact", "MEDIUM": "medium impact", "LOW": "low impact"},
          "zh": {"HIGH": "影响大", "MEDIUM": "影响中等", "LOW": "影响小"}}
# A person's review decides the outcome from then on: said to the subject with its date.
DECIDED_BY_PERSON = {
    "en": "Decided by a person on review on {date} ({status}); the automated decision was "
          "\"{original}\". The reasons below explain the automated decision.",
    "zh": "已于{date}经人工复核作出决定（{status}）；自动决定的结果为“{original}”。"
          "以下理由解释的是自动决定。",
}
CONFIRMED_BY_PERSON = {
    "en": "Confirmed by a person on review on {date}.",
    "zh": "已于{date}经人工复核维持。",
}
# Reviews that can change the outcome (an explanation request cannot).
DECIDING_KINDS = ("human_review", "contest")
DEFAULT_REGIMES = ("GDPR Art. 22 (solely automated decision with legal or similarly "
                   "significant effect); Art. 13-15 meaningful information",
                   "EU AI Act Annex III point 5(b) (creditworthiness), Art. 12, 13, 14, 86",
                   "US ECOA / Regulation B 12 CFR 1002.9 (adverse action notice)",
                   "China PIPL Art. 24 (automated decision-making)")
NO_CHANGE_FOUND = {"en": "No feasible change found that would lead to a different outcome.",
                   "zh": "未找到可行的、能改变结果的调整。"}


def subject_text(body: Mapping[str, Any], locale: str) -> dict[str, Any]:
    """The words the subject reads of a report (the adverse-action notice), without live
    state: the outcome the model gave, at most four reasons, what they could change and the
    caveat that fits the explanation's reliability."""
    reasons = [{"rank": r["rank"], "impact": r["impact"],
                "impact_text": IMPACT[locale][r["impact"]], "text": r["text"][locale]}
               for r in body["reasons"]["reasons"]]
    cf = body["counterfactuals"]
    changes = []
    for option in cf.get("options", []):
        if not option["valid"]:
            continue
        parts = [f"{c['display'][locale]['feature']}: {c['display'][locale]['before']} → "
                 f"{c['display'][locale]['after']}" for c in option["changes"]]
        changes.append({"rank": option["rank"], "changes": parts})
    reliability = body["reliability"]
    low = reliability["level"] == "low"
    shown = reliability.get("shown", True)
    ood = reliability.get("out_of_distribution") or {}
    caveat = (CAVEAT_WITHHELD if not shown else CAVEAT_LOW if ood.get(
        "out_of_distribution") else CAVEAT_QUALITY if low else CAVEAT_OK)[locale]
    if not shown:
        reasons = []
    return {"outcome": body["output"]["label"][locale], "reasons": reasons,
            "what_you_could_change": {
                "options": changes,
                "message": (NO_CHANGE_FOUND[locale]
                            if cf.get("requested") and not changes else None),
                "disclaimer": DISCLAIMER[locale] if cf.get("requested") else None},
            "caveat": caveat,
            "reliability": "withheld" if not shown else "low" if low else "normal"}
