"""The audit-log entry of each stored record, rebuilt the same way at write and verify time.

An entry holds identifiers, salted commitments, hashes and times: never personal data.
Times are RFC 3339 UTC strings with microseconds; outputs and free texts enter as
SHA-256 of their stored canonical JSON or text, so an entry never holds a float.

Records written once are rebuilt from their row (``ENTRY_BUILDERS``). Records that change,
principals and API keys, log their whole state at each change (``STATE_BUILDERS``);
verification replays those entries and compares the last state of each with its row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

__all__ = ["ENTRY_BUILDERS", "KIND_TABLE", "STATE_BUILDERS", "STATE_ID", "rfc3339",
           "state_entry"]


def rfc3339(value: datetime | str | None) -> str | None:
    """UTC time as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (SQLite returns naive UTC times; read
    with plain SQL, it returns them as ``YYYY-MM-DD HH:MM:SS[.ffffff]`` text)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(timespec="microseconds") + "Z"


def _sha(text: str | bytes | None) -> str | None:
    if text is None:
        return None
    data = text.encode() if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()


def _model(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"kind": "model_registered", "model": row["key"], "model_id": row["model_id"],
            "version": row["version"], "fingerprint": row["fingerprint"],
            "schema_sha256": _sha(row["schema_json"]), "at": rfc3339(row["registered_at"]),
            **_set({"spec_sha256": _sha(row.get("spec_json"))})}


def _set(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Fields added after schema 0001 enter an entry only when set, so entries written
    before they existed rebuild to the same bytes."""
    return {k: v for k, v in fields.items() if v is not None}


def _decision(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"kind": "decision_recorded", "decision_id": row["id"], "case_ref": row["case_ref"],
            "subject_ref": row["subject_ref"], "model": row["model_key"],
            "input_commitment": row["input_commitment"],
            "output_sha256": _sha(row["output_json"]),
            "policy_version": row["policy_version"], "decided_at": rfc3339(row["decided_at"]),
            "retain_until": rfc3339(row["retain_until"])}


def _report(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"kind": "explanation_generated", "report_id": row["id"],
            "decision_id": row["decision_id"], "schema_version": row["schema_version"],
            "report_sha256": _sha(row["body"]), "at": rfc3339(row["created_at"])}


def _access(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"kind": "record_accessed", "event_id": row["id"], "record_type": row["record_type"],
            "record_id": row["record_id"], "action": row["action"], "actor": row["actor"],
            "role": row["role"], "purpose": row["purpose"], "at": rfc3339(row["at"])}


def _review_requested(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"kind": "review_requested", "review_id": row["id"],
            "decision_id": row["decision_id"], "requested_by": row["requested_by"],
            "reason_sha256": _sha(row["reason"]), "at": rfc3339(row["requested_at"]),
            **_set({"request_kind": row.get("kind"), "channel": row.get("channel"),
                    "due_at": rfc3339(row.get("due_at"))})}


def _review_event(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"kind": "review_step", "event_id": row["id"], "review_id": row["review_id"],
            "decision_id": row["decision_id"], "action": row["action"], "actor": row["actor"],
            "role": row["role"], "at": rfc3339(row["at"])}


def _review_decided(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"kind": "review_decided", "review_id": row["id"], "decision_id": row["decision_id"],
            "status": row["status"], "reviewer": row["reviewer"],
            "reviewer_role": row["reviewer_role"], "rationale_sha256": _sha(row["rationale"]),
            "at": rfc3339(row["decided_at"])}


def _alert(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"kind": "alert_raised", "alert_id": row["id"], "alert_kind": row["kind"],
            "body_sha256": _sha(row["body_json"]), "at": rfc3339(row["raised_at"])}


def _erasure(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"kind": "payload_erased", "erasure_id": row["id"], "decision_id": row["decision_id"],
            "reason": row["reason"], "at": rfc3339(row["erased_at"])}


def _purge(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"kind": "record_purged", "purge_id": row["id"], "record_type": row["record_type"],
            "record_id": row["record_id"], "at": rfc3339(row["purged_at"])}


def _adhoc(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"kind": "adhoc_explanation", "explanation_id": row["id"], "model": row["model_key"],
            "actor": row["actor"], "method": row["method"],
            "input_commitment": row["input_commitment"],
            "explanation_sha256": row["explanation_sha256"], "at": rfc3339(row["created_at"])}


def _calibration(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"kind": "calibration_recorded", "calibration_id": row["id"],
            "model": row["model_key"], "body_sha256": _sha(row["body_json"]),
            "at": rfc3339(row["created_at"])}


ENTRY_BUILDERS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "model_registered": _model,
    "decision_recorded": _decision,
    "explanation_generated": _report,
    "record_accessed": _access,
    "review_requested": _review_requested,
    "review_decided": _review_decided,
    "review_step": _review_event,
    "alert_raised": _alert,
    "payload_erased": _erasure,
    "record_purged": _purge,
    "adhoc_explanation": _adhoc,
    "calibration_recorded": _calibration,
}

def _principal(row: Mapping[str, Any]) -> dict[str, Any]:
    # The name enters as its hash (a subject's login may be personal data); the subject
    # reference is already the peppered HMAC the decisions carry.
    return {"principal_id": row["id"], "name_sha256": _sha(row["name"]),
            "roles": str(row["roles"]).split(","), "subject_ref": row["subject_ref"],
            "disabled": bool(row["disabled"]), "created_at": rfc3339(row["created_at"])}


def _api_key(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"key_id": row["id"], "principal_id": row["principal_id"],
            "secret_sha256": row["secret_sha256"], "label_sha256": _sha(row["label"]),
            "created_at": rfc3339(row["created_at"]), "revoked_at": rfc3339(row["revoked_at"])}


# Records that change (who may do what): each change logs the record's whole state after
# it, and verification replays those entries to the state the table must hold now.
STATE_BUILDERS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "principal_recorded": _principal,
    "api_key_recorded": _api_key,
}
# The field of a state entry that holds its record's id.
STATE_ID: dict[str, str] = {"principal_recorded": "principal_id", "api_key_recorded": "key_id"}


def state_entry(kind: str, row: Mapping[str, Any], change: str,
                at: datetime | str) -> dict[str, Any]:
    """The entry of a change to a principal or key: the change (``created``,
    ``roles_changed``, ``disabled``, ``enabled``, ``revoked``, or ``existing`` when
    migration 0005 logged a record made before these entries), its time, and the
    record's state after it."""
    return {"kind": kind, "change": change, "at": rfc3339(at), **STATE_BUILDERS[kind](row)}


# The table whose row each kind of entry is rebuilt from (keyed by that table's id).
KIND_TABLE: dict[str, str] = {
    "model_registered": "models", "decision_recorded": "decisions",
    "explanation_generated": "reports", "record_accessed": "access_events",
    "review_requested": "reviews", "review_decided": "reviews",
    "review_step": "review_events", "alert_raised": "alerts",
    "payload_erased": "erasures", "record_purged": "purges",
    "adhoc_explanation": "adhoc_explanations", "calibration_recorded": "calibrations",
    "principal_recorded": "principals", "api_key_recorded": "api_keys",
}
