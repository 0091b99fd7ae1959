"""Fill a wheelhouse with what the service image runs, so the image builds with no network.

The runtime set is the dependency closure of ``xai-sandbox[images,text,formats,batch]`` as
installed in this environment (from the lock), without the development tools and without
xgboost's NCCL (multi-GPU only; the image is CPU). Every package keeps its lock hashes:
``wheelhouse/runtime.txt`` is installed in the image with ``--require-hashes``.

Usage: ``python tools/wheelhouse.py [WHEELHOUSE]`` (``make wheelhouse``; default
``wheelhouse/``). Wheels already there are kept (pip fetches only what is missing).
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
EXTRAS = ("images", "text", "formats", "batch")
LEAVE_OUT = {"nvidia-nccl-cu12"}
ENTRY = re.compile(r"^([A-Za-z0-9_.\-]+)==([^ \\]+)")


def locked(path: Path) -> dict[str, tuple[str, str]]:
    """name -> (``name==version``, its entry with the hashes) of a pip-compile lock."""
    found: dict[str, tuple[str, str]] = {}
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        m = ENTRY.match(line)
        if not m:
            continue
        entry = [line.rstrip(" \\")]
        for more in lines[i + 1:]:
            if not more.strip().startswith("--hash"):
                break
            entry.append(more.strip().rstrip(" \\"))
        found[canonicalize_name(m[1])] = (f"{m[1]}=={m[2]}", " ".join(entry))
    return found


def closure() -> set[str]:
    """The distributions ``xai-sandbox[EXTRAS]`` needs, from the installed metadata."""
    visited: set[tuple[str, frozenset[str]]] = set()
    todo = [(canonicalize_name("xai-sandbox"), frozenset(EXTRAS))]
    while todo:
        item = todo.pop()
        if item in visited or item[0] in LEAVE_OUT:
            continue
        visited.add(item)
        name, extras = item
        for raw in metadata.distribution(name).requires or []:
            req = Requirement(raw)
            if req.marker is not None and not any(
                    req.marker.evaluate({"extra": e}) for e in extras or {""}):
                continue
            todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    return {name for name, _ in visited} - {canonicalize_name("xai-sandbox")}


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    lock = locked(ROOT / "requirements" / "lock.txt")
    no_deps = locked(ROOT / "requirements" / "no-deps.txt")
    need = closure() | {canonicalize_name("torch"), canonicalize_name("pip")}
    missing = sorted(n for n in need if n not in lock)
    if missing:
        sys.exit(f"not in requirements/lock.txt: {missing}")
    runtime = [lock[n][1] for n in sorted(need)]
    (out / "runtime.txt").write_text("\n".join(runtime) + "\n")
    (out / "no-deps.txt").write_text("\n".join(e for _, e in no_deps.values()) + "\n")
    for listing in ("runtime.txt", "no-deps.txt"):
        # pip wheel takes a wheel as it is and builds one from a source-only release
        # (lime), checking the lock's hashes of what it fetched.
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                        "--require-hashes", "-w", str(out), "-r", str(out / listing)],
                       check=True)
    for old in out.glob("xai_sandbox-*.whl"):
        old.unlink()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "-w", str(out), str(ROOT)], check=True)
    # What the image installs (--no-index, from these files only), and their digests, which
    # its build checks: a wheel built here from a source release has no hash in the lock.
    pins = [lock[n][0] for n in sorted(need)] + [e for e, _ in no_deps.values()]
    (out / "requirements.txt").write_text("\n".join(pins) + "\n")
    wheels = sorted(out.glob("*.whl"))
    # The project's own wheel is left out: the image copies it in a layer of its own, so
    # a change of the code rebuilds that layer and not the dependencies'.
    (out / "SHA256SUMS").write_text("".join(
        f"{hashlib.sha256(w.read_bytes()).hexdigest()}  {w.name}\n" for w in wheels
        if not w.name.startswith("xai_sandbox-")))
    size = sum(w.stat().st_size for w in wheels) / 2**20
    print(f"{out}: {len(runtime)} locked packages, {len(wheels)} wheels, {size:,.0f} MiB")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "wheelhouse")
