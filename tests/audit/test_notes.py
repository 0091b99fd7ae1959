"""C2SP signed notes and checkpoints: round trip, and malformed input refused."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from xai_sandbox.audit.notes import (
    KeyStore,
    NoteError,
    Signer,
    checkpoint_body,
    parse_checkpoint,
    parse_verifier,
    sign_note,
    verify_note,
)


def _signer(name: str = "example.org/log") -> Signer:
    return Signer(name, Ed25519PrivateKey.generate())


def test_sign_verify_round_trip() -> None:
    signer = _signer()
    body = checkpoint_body("example.org/log", 42, b"\x07" * 32)
    note = sign_note(body, signer)
    assert note.startswith(body + "\n\u2014 example.org/log ")
    got_body, verifier = verify_note(note, [parse_verifier(signer.verifier.encode())])
    assert got_body == body and verifier == signer.verifier
    cp = parse_checkpoint(got_body)
    assert (cp.origin, cp.size, cp.root) == ("example.org/log", 42, b"\x07" * 32)


def test_a_note_with_one_changed_character_fails() -> None:
    signer = _signer()
    note = sign_note(checkpoint_body("example.org/log", 42, b"\x07" * 32), signer)
    with pytest.raises(NoteError, match="not signed by any trusted key"):
        verify_note(note.replace("\n42\n", "\n43\n"), [signer.verifier])
    with pytest.raises(NoteError, match="not signed by any trusted key"):
        verify_note(note, [_signer().verifier])


@pytest.mark.parametrize("note", [
    "", "no signature\n", "body\n\nsig line without dash\n", "body\n\n\u2014 name !!!\n",
    "body\n\n\u2014 name AAAA\n", 42,
])
def test_malformed_notes_are_refused(note: object) -> None:
    with pytest.raises(NoteError):
        verify_note(note, [_signer().verifier])  # type: ignore[arg-type]


@pytest.mark.parametrize("body", [
    "origin\n", "origin\nx\nAAAA\n", "origin\n01\n" + "A" * 44 + "\n",
    "origin\n5\nnot-base64\n", "origin\n5\nAAAA\n", "\n5\n" + "B" * 43 + "=\n",
])
def test_malformed_checkpoints_are_refused(body: str) -> None:
    with pytest.raises(NoteError):
        parse_checkpoint(body)


@pytest.mark.parametrize("text", ["", "name", "name+zz+AAAA", "name+00000000+AQ==",
                                  "bad name+00000000+" + "A" * 44])
def test_malformed_verifier_keys_are_refused(text: str) -> None:
    with pytest.raises(NoteError):
        parse_verifier(text)


def test_verifier_key_hash_must_match_the_key() -> None:
    good = _signer().verifier.encode()
    name, key_hash, key = good.split("+", 2)
    wrong = f"{name}+{'0' * 8 if key_hash != '0' * 8 else '1' * 8}+{key}"
    with pytest.raises(NoteError, match="key hash does not match"):
        parse_verifier(wrong)


def test_keystore_creates_a_private_key_and_trusts_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = KeyStore(tmp_path / "keys" / "signing-key.pem", "example.org/log")
    signer = store.signer()
    assert (tmp_path / "keys" / "signing-key.pem").stat().st_mode & 0o777 == 0o600
    assert store.verifiers() == [signer.verifier]
    assert store.signer().verifier == signer.verifier  # loaded, not regenerated
    (tmp_path / "keys" / "signing-key.pem").write_text("garbage", encoding="utf-8")
    with pytest.raises(NoteError, match="PEM Ed25519 private key"):
        store.signer()
