"""Publishing checkpoints to a witness: a file or an HTTP endpoint the operator does not
control. Once a signed checkpoint is out of the operator's hands, any later attempt to
rewrite history shows up as a checkpoint that is not consistent with the published one.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

from xai_sandbox.audit.notes import parse_checkpoint
from xai_sandbox.errors import InvalidInputError

__all__ = ["publish_checkpoint"]


def publish_checkpoint(note: str, target: str, timeout: float = 10.0) -> str:
    """Send a signed checkpoint note to ``target``; returns where it went.

    ``http://`` or ``https://`` URLs receive a POST of the note as ``text/plain``; any
    other target is a folder (``<size>.checkpoint`` is written in it) or a file path.
    """
    body, _, _ = note.partition("\n\n")
    size = parse_checkpoint(body + "\n").size
    if target.startswith(("http://", "https://")):
        request = urllib.request.Request(target, data=note.encode(), method="POST",
                                         headers={"Content-Type": "text/plain; charset=utf-8"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status = int(response.status)
        except urllib.error.HTTPError as exc:
            raise InvalidInputError("target", "the witness refused the checkpoint",
                                    f"{target}: HTTP {exc.code}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise InvalidInputError("target", "must be a reachable witness endpoint",
                                    f"{target}: {exc}") from exc
        if not 200 <= status < 300:
            raise InvalidInputError("target", "the witness did not accept the checkpoint",
                                    f"HTTP {status}")
        return target
    path = Path(target)
    if path.is_dir():
        path = path / f"{size}.checkpoint"
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(note)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise InvalidInputError("target", "must be a writable file or folder",
                                f"{target}: {exc.strerror}") from exc
    return str(path)
