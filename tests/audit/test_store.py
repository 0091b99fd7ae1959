"""The store and its audit log, on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, select, update

from xai_sandbox.audit.log import Receipt, check_receipt
from xai_sandbox.audit.merkle import MemoryTree, ProofError, leaf_hash
from xai_sandbox.audit.notes import NoteError, Signer, parse_checkpoint, sign_note, verify_note
from xai_sandbox.errors import InvalidInputError
from xai_sandbox.store import Store
from xai_sandbox.store import tables as t
from xai_sandbox.store.verify import verify_log

FP = "ab" * 32


def _populate(store: Store) -> dict[str, object]:
    key, _ = store.register_model("credit-mlp", "1", FP, {"features": ["age"]})
    alice = store.record_decision(model_key=key, subject_id="alice@example.org",
                                  inputs={"age": 41, "income": 52000},
                                  output={"score": 0.81, "decision": "rejected"},
                                  policy_version="credit/3")
    bob = store.record_decision(model_key=key, subject_id="bob", inputs={"age": 29},
                                output={"score": 0.2, "decision": "approved"},
                                policy_version="credit/3")
    store.log.checkpoint()
    report_id, _ = store.record_report(alice.decision_id, {"reasons": ["duration"]}, "r/1")
    store.record_access(record_type="reports", record_id=report_id, action="read",
                        actor="auditor-1", role="auditor", purpose="annual review")
    review_id, _ = store.request_review(alice.decision_id, "alice", "I disagree")
    store.decide_review(review_id, outcome="overridden", reviewer="officer-7",
                        role="credit officer", rationale="income verified")
    store.raise_alert("anchor_risk", {"anchor": "age", "score": 0.9})
    store.log.checkpoint()
    return {"key": key, "alice": alice, "bob": bob, "report": report_id, "review": review_id}


def _verify(store: Store):  # type: ignore[no-untyped-def]
    return verify_log(store.engine, store.keys.verifiers(), store.log.origin)


def test_receipt_verifies_offline_and_holds_no_personal_data(store: Store) -> None:
    ids = _populate(store)
    receipt = store.receipt(ids["alice"].leaf_index)  # type: ignore[attr-defined]
    text = receipt.to_json()
    assert "alice" not in text and "52000" not in text
    entry = check_receipt(Receipt.from_json(text), store.keys.verifiers())
    assert entry["kind"] == "decision_recorded"
    assert entry["subject_ref"] == store.subject_ref("alice@example.org")
    assert store.payload(ids["alice"].decision_id) == {"age": 41, "income": 52000}  # type: ignore[attr-defined]


def test_full_verification_passes(store: Store) -> None:
    _populate(store)
    report = _verify(store)
    assert report.ok, report.problems
    assert report.entries == 8 and report.checkpoints == 2
    with store.engine.connect() as conn:
        kinds = conn.execute(select(t.log_entries.c.kind).order_by(t.log_entries.c.idx)
                             ).scalars().all()
    assert kinds == ["model_registered", "decision_recorded", "decision_recorded",
                     "explanation_generated", "record_accessed", "review_requested",
                     "review_decided", "alert_raised"]


def _tamper(store: Store, statement) -> str:  # type: ignore[no-untyped-def]
    with store.engine.begin() as conn:
        conn.execute(statement)
    report = _verify(store)
    assert not report.ok
    return report.problems[0]


def test_one_changed_byte_in_a_record(store: Store) -> None:
    ids = _populate(store)
    problem = _tamper(store, update(t.decisions).where(
        t.decisions.c.id == ids["bob"].decision_id).values(policy_version="credit/4"))  # type: ignore[attr-defined]
    assert problem.startswith(f"entry {ids['bob'].leaf_index} (decision_recorded")  # type: ignore[attr-defined]
    assert "does not match its log entry" in problem


def test_one_changed_byte_in_a_report_body(store: Store) -> None:
    ids = _populate(store)
    with store.engine.connect() as conn:
        body = conn.execute(select(t.reports.c.body)).scalar_one()
    problem = _tamper(store, update(t.reports).values(body=body.replace(b"duration",
                                                                         b"Duration")))
    assert "explanation_generated" in problem and "does not match" in problem
    assert ids


def test_changed_log_body_or_node(store: Store) -> None:
    _populate(store)
    with store.engine.connect() as conn:
        body = conn.execute(select(t.log_entries.c.body).where(t.log_entries.c.idx == 3)
                            ).scalar_one()
    problem = _tamper(store, update(t.log_entries).where(t.log_entries.c.idx == 3)
                      .values(body=body[:-2] + b"x}"))
    assert problem.startswith("entry 3 ") and "leaf hash" in problem


def test_changed_node(store: Store) -> None:
    _populate(store)
    problem = _tamper(store, update(t.log_nodes).where(t.log_nodes.c.node == t.node_key(1, 0))
                      .values(hash=b"\x00" * 32))
    assert problem.startswith("node (1, 0)")


def test_deleted_rows(store: Store) -> None:
    _populate(store)
    problem = _tamper(store, delete(t.access_events))
    assert "record_accessed" in problem and "record is missing" in problem


@pytest.mark.parametrize("where", [2, 6])
def test_parallel_verification_names_the_same_entry(store: Store, where: int) -> None:
    _populate(store)
    with store.engine.begin() as conn:
        conn.execute(update(t.log_entries).where(t.log_entries.c.idx == where)
                     .values(leaf_hash=b"\x01" * 32))
    one = verify_log(store.engine, store.keys.verifiers(), store.log.origin, workers=1)
    two = verify_log(store.engine, store.keys.verifiers(), store.log.origin, workers=2)
    assert one.problems[0] == two.problems[0]
    assert one.problems[0].startswith(f"entry {where} ")


def test_parallel_verification_passes_a_sound_log(store: Store) -> None:
    _populate(store)
    report = verify_log(store.engine, store.keys.verifiers(), store.log.origin, workers=2)
    assert report.ok and report.entries == 8


def test_deleted_log_entry(store: Store) -> None:
    _populate(store)
    problem = _tamper(store, delete(t.log_entries).where(t.log_entries.c.idx == 2))
    assert problem.startswith("entry 2: missing")


def test_two_rows_swapped(store: Store) -> None:
    _populate(store)
    with store.engine.begin() as conn:
        rows = {r.idx: r for r in conn.execute(select(t.log_entries).where(
            t.log_entries.c.idx.in_([1, 2])))}
        for a, b in ((1, 2), (2, 1)):
            conn.execute(update(t.log_entries).where(t.log_entries.c.idx == a).values(
                body=rows[b].body, leaf_hash=rows[b].leaf_hash, record_id=rows[b].record_id))
    report = _verify(store)
    assert not report.ok
    assert report.problems[0].startswith("node (0, 1)")


def test_record_replaced_with_its_leaf_and_nodes(store: Store) -> None:
    """The attacker rewrites a record, its entry, its leaf and every node: only the signed
    checkpoints catch it."""
    from xai_sandbox.audit.canonical import canonical_json
    from xai_sandbox.store.entries import ENTRY_BUILDERS

    ids = _populate(store)
    bob = ids["bob"]
    with store.engine.begin() as conn:
        conn.execute(update(t.decisions).where(t.decisions.c.id == bob.decision_id)  # type: ignore[attr-defined]
                     .values(output_json='{"decision":"rejected","score":0.9}'))
        row = conn.execute(select(t.decisions).where(t.decisions.c.id == bob.decision_id)  # type: ignore[attr-defined]
                           ).mappings().one()
        body = canonical_json(ENTRY_BUILDERS["decision_recorded"](row))
        conn.execute(update(t.log_entries).where(t.log_entries.c.idx == bob.leaf_index)  # type: ignore[attr-defined]
                     .values(body=body, leaf_hash=leaf_hash(body)))
        tree = MemoryTree()
        tree.extend([bytes(h) for (h,) in conn.execute(
            select(t.log_entries.c.leaf_hash).order_by(t.log_entries.c.idx))])
        conn.execute(delete(t.log_nodes))
        conn.execute(t.log_nodes.insert(), [{"node": t.node_key(lv, ix), "hash": h}
                                            for (lv, ix), h in tree.nodes.items()])
    report = _verify(store)
    assert not report.ok
    assert report.problems[0].startswith("checkpoint at size 3: signed root is not the root")


def test_checkpoint_resigned_with_another_key(store: Store) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    _populate(store)
    with store.engine.begin() as conn:
        cp = conn.execute(select(t.checkpoints).order_by(t.checkpoints.c.size)).first()
        body = cp.note.partition("\n\n")[0] + "\n"
        forged = sign_note(body, Signer(store.keys.name, Ed25519PrivateKey.generate()))
        conn.execute(update(t.checkpoints).where(t.checkpoints.c.size == cp.size)
                     .values(note=forged))
    report = _verify(store)
    assert not report.ok
    assert "not signed by any trusted key" in report.problems[0]
    assert report.problems[0].startswith(f"checkpoint at size {cp.size}")


def test_no_checkpoint_is_signed_over_an_inconsistent_tree(store: Store) -> None:
    _populate(store)
    with store.engine.begin() as conn:
        # The subtree over entries 0-7, which the next root is built on.
        conn.execute(update(t.log_nodes).where(t.log_nodes.c.node == t.node_key(3, 0))
                     .values(hash=b"\x11" * 32))
    store.register_model("other", "1", FP)
    with pytest.raises(ProofError):
        store.log.checkpoint()
    with store.engine.connect() as conn:
        assert conn.execute(select(t.checkpoints.c.size)).scalars().all() == [3, 8]


def test_erasure_keeps_the_log_verifiable(store: Store) -> None:
    ids = _populate(store)
    leaves = store.erase_subject("alice@example.org")
    assert len(leaves) == 1
    assert store.payload(ids["alice"].decision_id) is None  # type: ignore[attr-defined]
    assert store.payload(ids["bob"].decision_id) == {"age": 29}  # type: ignore[attr-defined]
    store.log.checkpoint()
    assert _verify(store).ok


def test_retention_purge_and_legal_hold(store: Store) -> None:
    ids = _populate(store)
    alice, bob = ids["alice"], ids["bob"]
    decided = store.decision(bob.decision_id)["decided_at"]  # type: ignore[attr-defined]
    retain = store.decision(bob.decision_id)["retain_until"]  # type: ignore[attr-defined]
    assert (retain - decided).days == 1096  # the longest period: PIPL, 3 years
    store.set_legal_hold(alice.decision_id, True)  # type: ignore[attr-defined]
    assert store.purge(datetime.now(UTC)) == []
    purged = store.purge(datetime.now(UTC) + timedelta(days=1100))
    assert purged == [bob.decision_id]  # type: ignore[attr-defined]
    with pytest.raises(InvalidInputError):
        store.decision(bob.decision_id)  # type: ignore[attr-defined]
    assert store.decision(alice.decision_id)["legal_hold"]  # type: ignore[attr-defined]
    store.log.checkpoint()
    report = _verify(store)
    assert report.ok, report.problems


def test_signing_key_permissions_and_rotation(store: Store) -> None:
    _populate(store)
    path = store.keys.key_path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    old = store.keys.signer().verifier
    new = store.keys.rotate().verifier
    assert new.key_id != old.key_id
    store.register_model("other", "1", FP)
    _, note = store.log.checkpoint()
    assert verify_note(note, [new])[1] == new
    assert _verify(store).ok  # old checkpoints verify with the retired key
    path.chmod(0o644)
    with pytest.raises(NoteError, match="must not be readable by group or others"):
        store.keys.signer()


def test_consistency_proof_between_checkpoints(store: Store) -> None:
    from xai_sandbox.audit.merkle import verify_consistency

    _populate(store)
    proof = store.log.consistency_proof(3, 8)
    verify_consistency(3, 8, store.log.root(3), store.log.root(8), proof)
    with pytest.raises(ProofError):
        store.log.consistency_proof(3, 99)


def test_bad_input_is_refused(store: Store) -> None:
    with pytest.raises(InvalidInputError, match="model_key: must be a registered model"):
        store.record_decision(model_key="nope@1", subject_id="x", inputs={}, output={},
                              policy_version="p")
    with pytest.raises(InvalidInputError, match="fingerprint"):
        store.register_model("m", "1", "short")
    key, _ = store.register_model("m", "1", FP)
    with pytest.raises(InvalidInputError, match="another fingerprint"):
        store.register_model("m", "1", "cd" * 32)
    with pytest.raises(InvalidInputError, match="action: must be 'read' or 'export'"):
        store.record_access(record_type="reports", record_id="r", action="delete",
                            actor="a", role="b", purpose="c")
    with pytest.raises(InvalidInputError, match="canonical JSON holds finite numbers"):
        store.record_decision(model_key=key, subject_id="x", inputs={"a": float("nan")},
                              output={}, policy_version="p")
    # Nothing half-written: the log holds only the model.
    assert store.log.size() == 1


def test_malformed_receipts_never_verify(store: Store) -> None:
    ids = _populate(store)
    good = store.receipt(ids["bob"].leaf_index).to_dict()  # type: ignore[attr-defined]
    verifiers = store.keys.verifiers()
    cases = [
        {**good, "inclusion_proof": good["inclusion_proof"][:-1]},
        {**good, "leaf_index": good["leaf_index"] + 1},
        {**good, "entry": good["entry"].replace("credit/3", "credit/4")},
        {**good, "checkpoint": good["checkpoint"].replace("\n\n", "\n")},
        {**good, "leaf_hash": "not base64!"},
        {**good, "origin": "other.example/log"},
    ]
    for case in cases:
        with pytest.raises(InvalidInputError):
            check_receipt(Receipt.from_dict(case), verifiers)
    with pytest.raises(InvalidInputError, match="must be valid JSON"):
        Receipt.from_json("{not json")
    with pytest.raises(InvalidInputError, match="missing fields"):
        Receipt.from_dict({"origin": "x"})
    assert check_receipt(Receipt.from_dict(good), verifiers)["kind"] == "decision_recorded"
    assert parse_checkpoint(good["checkpoint"].partition("\n\n")[0] + "\n").size == 8
    assert json.loads(good["entry"])["decision_id"] == ids["bob"].decision_id  # type: ignore[attr-defined]


def test_an_edited_personal_input_is_named(store: Store) -> None:
    ids = _populate(store)
    alice = ids["alice"].decision_id  # type: ignore[attr-defined]
    assert _verify(store).ok
    problem = _tamper(store, update(t.payloads).where(t.payloads.c.decision_id == alice)
                      .values(payload_json='{"age":41,"income":92000}'))
    assert problem == (f"decision {alice}: its personal input does not match the input "
                       "commitment of its logged record (changed since recorded)")
    # Erased, it verifies as erased.
    store.erase_subject("alice@example.org")
    assert _verify(store).ok
