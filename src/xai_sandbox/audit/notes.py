"""Checkpoints as C2SP signed notes with Ed25519 keys.

A checkpoint body (C2SP tlog-checkpoint) is three lines: the log's origin, the tree size
in decimal, and the base64 root hash. A signed note appends a blank line and one line per
signature: an em dash, the key name, and base64 of the 4-byte key hash followed by the
Ed25519 signature of the body. The key hash is the first 4 bytes of
SHA-256(name || "\\n" || 0x01 || public key); a verifier key is written
``name+hash+base64(0x01 || public key)``.

The signing key is generated on first use and written with 0600 permissions; a key file
readable by others is refused. Rotating writes a new key and keeps every retired public key
in the trusted verifier list, so old checkpoints still verify.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from xai_sandbox.errors import InvalidInputError

__all__ = ["Checkpoint", "KeyStore", "NoteError", "Signer", "Verifier", "checkpoint_body",
           "follow_rotation", "parse_checkpoint", "parse_verifier", "rotation_entry",
           "sign_note", "verify_note"]

_ED25519 = b"\x01"
_DASH = "\u2014 "


class NoteError(InvalidInputError):
    """A note, checkpoint or key is malformed or does not verify."""


def _key_hash(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + _ED25519 + public).digest()[:4]


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name or any(c.isspace() or c == "+" for c in name):
        raise NoteError("name", "must be non-empty with no spaces or '+'", name)
    return name


@dataclass(frozen=True)
class Verifier:
    """A named Ed25519 public key that checks note signatures."""

    name: str
    public: bytes

    @property
    def key_hash(self) -> bytes:
        return _key_hash(self.name, self.public)

    @property
    def key_id(self) -> str:
        return self.key_hash.hex()

    def encode(self) -> str:
        return (f"{self.name}+{self.key_id}+"
                f"{base64.b64encode(_ED25519 + self.public).decode()}")

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public).verify(signature, message)
        except InvalidSignature:
            return False
        return True


def parse_verifier(text: str) -> Verifier:
    """Parse ``name+hash+base64key``; the hash must match the key."""
    parts = text.strip().split("+", 2)  # base64 may itself hold "+"
    if len(parts) != 3:
        raise NoteError("verifier_key", "must look like name+hash+base64key", text)
    name, hex_hash, b64 = parts
    try:
        raw = base64.b64decode(b64, validate=True)
        want = bytes.fromhex(hex_hash)
    except (binascii.Error, ValueError) as exc:
        raise NoteError("verifier_key", "has an invalid hash or base64 key", text) from exc
    if len(raw) != 33 or raw[:1] != _ED25519:
        raise NoteError("verifier_key", "must hold an Ed25519 key (type 0x01, 32 bytes)", text)
    verifier = Verifier(_check_name(name), raw[1:])
    if verifier.key_hash != want:
        raise NoteError("verifier_key", "key hash does not match the key", hex_hash)
    return verifier


@dataclass(frozen=True)
class Signer:
    name: str
    private: Ed25519PrivateKey

    @property
    def verifier(self) -> Verifier:
        public = self.private.public_key().public_bytes(serialization.Encoding.Raw,
                                                        serialization.PublicFormat.Raw)
        return Verifier(self.name, public)


def sign_note(body: str, signer: Signer) -> str:
    """The signed note of ``body`` (which must end with a newline)."""
    if not body.endswith("\n") or "\n\n" in body:
        raise NoteError("body", "must end with one newline and hold no blank line", body)
    sig = signer.private.sign(body.encode())
    line = base64.b64encode(signer.verifier.key_hash + sig).decode()
    return f"{body}\n{_DASH}{signer.name} {line}\n"


def verify_note(note: str, verifiers: list[Verifier]) -> tuple[str, Verifier]:
    """Check a signed note; returns its body and the verifier whose signature holds.

    Raises :class:`NoteError` if the note is malformed or no trusted key signed it.
    """
    if not isinstance(note, str) or "\n\n" not in note or not note.endswith("\n"):
        raise NoteError("note", "must be a body, a blank line and signature lines", note)
    body, _, sigs = note.partition("\n\n")
    body += "\n"
    lines = sigs[:-1].split("\n")
    by_hash = {(v.name, v.key_hash): v for v in verifiers}
    for line in lines:
        if not line.startswith(_DASH):
            raise NoteError("note", "signature lines must start with an em dash", line)
        name, _, b64 = line[len(_DASH):].partition(" ")
        try:
            raw = base64.b64decode(b64, validate=True)
        except binascii.Error as exc:
            raise NoteError("note", "signature is not valid base64", line) from exc
        if len(raw) != 4 + 64:
            raise NoteError("note", "an Ed25519 signature line holds 68 bytes", len(raw))
        verifier = by_hash.get((name, raw[:4]))
        if verifier is not None and verifier.verify(body.encode(), raw[4:]):
            return body, verifier
    raise NoteError("note", "is not signed by any trusted key",
                    [line.split(" ")[1] if " " in line else line for line in lines])


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def body(self) -> str:
        return checkpoint_body(self.origin, self.size, self.root)


def checkpoint_body(origin: str, size: int, root: bytes) -> str:
    if not origin or "\n" in origin:
        raise NoteError("origin", "must be one non-empty line", origin)
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n"


def parse_checkpoint(body: str) -> Checkpoint:
    lines = body.split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise NoteError("checkpoint", "must be origin, size and root lines", body)
    origin, size_text, root_text = lines[0], lines[1], lines[2]
    if not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")):
        raise NoteError("checkpoint", "tree size must be a decimal number", size_text)
    try:
        root = base64.b64decode(root_text, validate=True)
    except binascii.Error as exc:
        raise NoteError("checkpoint", "root must be base64", root_text) from exc
    if len(root) != 32 or not origin:
        raise NoteError("checkpoint", "needs an origin and a 32-byte root", body)
    return Checkpoint(origin, int(size_text), root)


# What the previous key signs when it hands over to the next (domain-separated).
_ROTATION = b"xai-sandbox key rotation v1\n"


def rotation_entry(previous: Signer, new: Verifier) -> dict[str, Any]:
    """The log entry of a key rotation: the new verifier key, endorsed by the previous
    signing key, so a verifier that trusts the old key can follow the chain."""
    endorsement = previous.private.sign(_ROTATION + new.encode().encode())
    return {"kind": "key_rotated", "new_verifier": new.encode(),
            "previous_key_id": previous.verifier.key_id,
            "endorsement": base64.b64encode(endorsement).decode()}


def follow_rotation(entry: Any, trusted: list[Verifier]) -> Verifier:
    """The new verifier of a ``key_rotated`` entry, if a key in ``trusted`` endorsed it;
    raises :class:`NoteError` naming what fails."""
    if not isinstance(entry, dict) or set(entry) != {"kind", "new_verifier",
                                                     "previous_key_id", "endorsement"}:
        raise NoteError("key_rotated", "must hold new_verifier, previous_key_id and "
                        "endorsement", entry)
    new = parse_verifier(str(entry["new_verifier"]))
    previous = [v for v in trusted if v.key_id == entry["previous_key_id"]]
    if not previous:
        raise NoteError("key_rotated", "is endorsed by a key that is not trusted",
                        entry["previous_key_id"])
    try:
        signature = base64.b64decode(str(entry["endorsement"]), validate=True)
    except binascii.Error as exc:
        raise NoteError("key_rotated", "endorsement must be base64", entry["endorsement"]
                        ) from exc
    if not previous[0].verify(_ROTATION + new.encode().encode(), signature):
        raise NoteError("key_rotated", "endorsement is not the previous key's signature of "
                        "the new key", new.key_id)
    return new


class KeyStore:
    """The signing key and the trusted verifier keys, in one folder.

    ``signing-key.pem`` (0600) is the current key; ``verifiers.txt`` lists every key
    ever used, so checkpoints signed before a rotation still verify.
    """

    def __init__(self, key_path: Path, name: str) -> None:
        self.key_path = Path(key_path)
        self.name = _check_name(name)

    @property
    def verifiers_path(self) -> Path:
        return self.key_path.with_name("verifiers.txt")

    def signer(self) -> Signer:
        """Load the key, generating it on first use."""
        if not self.key_path.exists():
            return self._create()
        mode = stat.S_IMODE(self.key_path.stat().st_mode)
        if mode & 0o077:
            raise NoteError("signing_key", "must not be readable by group or others "
                            "(chmod 600)", f"{self.key_path} mode {mode:o}")
        try:
            key = serialization.load_pem_private_key(self.key_path.read_bytes(), None)
        except ValueError as exc:
            raise NoteError("signing_key", "must be a PEM Ed25519 private key",
                            str(self.key_path)) from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise NoteError("signing_key", "must be an Ed25519 key", type(key).__name__)
        return Signer(self.name, key)

    def _create(self) -> Signer:
        self.key_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        tmp = self.key_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.key_path)
        signer = Signer(self.name, key)
        self._trust(signer.verifier)
        return signer

    def _trust(self, verifier: Verifier) -> None:
        known = {v.encode() for v in self.verifiers()}
        if verifier.encode() not in known:
            with self.verifiers_path.open("a", encoding="utf-8") as fh:
                fh.write(verifier.encode() + "\n")

    def verifiers(self) -> list[Verifier]:
        if not self.verifiers_path.exists():
            return []
        return [parse_verifier(line) for line in
                self.verifiers_path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def rotate(self) -> Signer:
        """Replace the signing key; the old public key stays trusted."""
        old = self.signer()
        self._trust(old.verifier)
        self.key_path.unlink()
        return self._create()
