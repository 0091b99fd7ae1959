"""Content-addressed files: uploaded models and training samples, stored by SHA-256.

A file lives at ``<root>/sha256/<first two hex digits>/<digest>``, written once (to a
temporary name, fsynced, then renamed), read-only afterwards. A folder (an MLflow model)
is its files plus a manifest, ``<digest>.manifest``: one ``<sha256>  <relative path>``
line per file, whose own SHA-256 is the folder's digest. A stored file that no longer
hashes to its name is refused when read.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path

from xai_sandbox.audit.canonical import sha256_file
from xai_sandbox.errors import ConflictError, InvalidInputError, NotFoundError

__all__ = ["BlobStore"]

_HEX = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


class BlobStore:
    """Files stored under their SHA-256 below ``root`` (created owner-only)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, digest: str, suffix: str = "") -> Path:
        if not isinstance(digest, str) or not _HEX.match(digest):
            raise InvalidInputError("sha256", "must be a SHA-256 hex digest", digest)
        return self.root / "sha256" / digest[:2] / f"{digest}{suffix}"

    def put(self, source: Path) -> str:
        """Store a file's bytes; returns their SHA-256 (storing the same bytes twice keeps
        one copy)."""
        source = Path(source)
        if not source.is_file():
            raise InvalidInputError("source", "must be a regular file", str(source))
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".incoming-")
        h = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
                for chunk in iter(lambda: src.read(_CHUNK), b""):
                    h.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            digest = h.hexdigest()
            target = self._path(digest)
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                os.chmod(tmp, 0o400)
                os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return digest

    def put_folder(self, folder: Path) -> str:
        """Store every file of a folder and its manifest; returns the manifest's SHA-256."""
        folder = Path(folder)
        lines = []
        for path in sorted(folder.rglob("*")):
            if path.is_symlink():
                raise InvalidInputError("folder", "must not contain symbolic links", str(path))
            if path.is_file():
                lines.append(f"{self.put(path)}  {path.relative_to(folder).as_posix()}\n")
        manifest = "".join(lines).encode()
        digest = hashlib.sha256(manifest).hexdigest()
        target = self._path(digest, ".manifest")
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            target.write_bytes(manifest)
            os.chmod(target, 0o400)
        return digest

    def path(self, digest: str) -> Path:
        """The stored file of ``digest``, checked against it."""
        path = self._path(digest)
        if not path.is_file():
            raise NotFoundError("sha256", "must name a stored file", digest)
        if sha256_file(path) != digest:
            raise ConflictError("sha256", "names a stored file whose bytes changed", digest)
        return path

    def folder(self, digest: str, into: Path) -> Path:
        """Rebuild the folder of a manifest ``digest`` below ``into``; returns it."""
        manifest = self._path(digest, ".manifest")
        if not manifest.is_file():
            raise NotFoundError("sha256", "must name a stored folder", digest)
        data = manifest.read_bytes()
        if hashlib.sha256(data).hexdigest() != digest:
            raise ConflictError("sha256", "names a stored folder whose manifest changed",
                                digest)
        target = Path(into) / digest
        if target.exists():
            shutil.rmtree(target)
        for line in data.decode().splitlines():
            file_digest, rel = line.split("  ", 1)
            dest = (target / rel).resolve()
            if target.resolve() not in dest.parents:
                raise ConflictError("sha256", "a manifest path leaves its folder", rel)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.path(file_digest), dest)
        return target
