"""Key rotation as a logged, endorsed handover: a verifier that pins only the first key
follows the chain to checkpoints signed by the next; a rotation entry not endorsed by a
trusted key, or a history re-signed with a key outside the chain, is refused."""

from __future__ import annotations

import json

from sqlalchemy import select, update

from xai_sandbox.audit.notes import KeyStore, Signer, rotation_entry
from xai_sandbox.store import Store
from xai_sandbox.store import tables as t
from xai_sandbox.store.verify import verify_log

FP = "cd" * 32


def _decide(store: Store, n: int) -> None:
    key, _ = store.register_model("m", "1", FP)
    for i in range(n):
        store.record_decision(model_key=key, subject_id=f"s{i}", inputs={"i": i},
                              output={"ok": True}, policy_version="p")


def test_a_pinned_first_key_follows_logged_rotations(store: Store) -> None:
    _decide(store, 2)
    store.log.checkpoint()
    first = store.keys.signer().verifier
    second = store.log.rotate_key().verifier
    _decide(store, 2)
    third = store.log.rotate_key().verifier
    store.log.checkpoint()
    assert len({first.key_id, second.key_id, third.key_id}) == 3
    report = verify_log(store.engine, [first], store.log.origin)  # only the first key
    assert report.ok, report.problems
    with store.engine.connect() as conn:
        rotations = conn.execute(select(t.log_entries.c.body).where(
            t.log_entries.c.kind == "key_rotated")).scalars().all()
    bodies = [json.loads(bytes(b)) for b in rotations]
    assert [b["previous_key_id"] for b in bodies] == [first.key_id, second.key_id]
    assert [b["new_verifier"] for b in bodies] == [second.encode(), third.encode()]
    # Trusting only the newest key, the first handover has no trusted endorser.
    alone = verify_log(store.engine, [third], store.log.origin)
    assert not alone.ok
    assert "endorsed by a key that is not trusted" in alone.problems[0]


def test_a_rotation_endorsed_by_an_outside_key_is_refused(store: Store, tmp_path) -> None:
    _decide(store, 1)
    store.log.checkpoint()
    first = store.keys.signer().verifier
    thief = KeyStore(tmp_path / "thief" / "k.pem", "thief").signer()
    forged = rotation_entry(Signer(thief.name, thief.private), thief.verifier)
    store.log.rotate_key()
    with store.writer.begin() as conn:  # the DBA swaps in a handover to the thief's key
        conn.execute(update(t.log_entries).where(t.log_entries.c.kind == "key_rotated")
                     .values(body=json.dumps(forged).encode()))
    report = verify_log(store.engine, [first], store.log.origin)
    assert not report.ok
    assert "key_rotated" in report.problems[0]
