"""Compare the running Python environment with the lock files.

``python tools/lockcheck.py``        exit 1 and name every distribution whose version differs
                                     from requirements/lock.txt or requirements/no-deps.txt,
                                     every locked one that is missing and every installed one
                                     the lock does not name
``python tools/lockcheck.py --diff`` print the same differences as a table and exit 0 (what
                                     `make test-latest` shows: the packages that changed)
"""

from __future__ import annotations

import argparse
import re
import sys
import sysconfig
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCKS = (ROOT / "requirements" / "lock.txt", ROOT / "requirements" / "no-deps.txt")
# The project itself is installed from the working tree, not from the lock.
PROJECT = "xai-sandbox"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def canonical(name: str) -> str:
    """A distribution's name as PEP 503 compares it."""
    return re.sub(r"[-_.]+", "-", name).lower()


def locked(paths: tuple[Path, ...] = LOCKS) -> dict[str, str]:
    """``{name: version}`` of every ``name==version`` line of the lock files."""
    pins: dict[str, str] = {}
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            match = _PIN.match(line.strip())
            if match:
                pins[canonical(match.group(1))] = match.group(2)
    if not pins:
        raise SystemExit(f"no name==version lines in {', '.join(map(str, paths))}")
    return pins


def installed() -> dict[str, str]:
    """``{name: version}`` of every distribution installed in the environment.

    Only the environment's own install folders count, not whatever ``sys.path`` holds at the
    moment: Ray, once imported, puts its vendored copies (``ray/thirdparty_files``) on it.
    """
    folders = sorted({sysconfig.get_paths()[key] for key in ("purelib", "platlib")})
    found: dict[str, str] = {}
    for dist in metadata.distributions(path=folders):
        name = dist.metadata["Name"]
        if name:
            found[canonical(name)] = dist.version
    return found


@dataclass(frozen=True)
class Difference:
    name: str
    locked: str | None
    installed: str | None

    def __str__(self) -> str:
        if self.installed is None:
            return f"{self.name}: locked {self.locked}, not installed"
        if self.locked is None:
            return f"{self.name}: installed {self.installed}, not in the lock"
        return f"{self.name}: locked {self.locked}, installed {self.installed}"


def differences(pins: dict[str, str], present: dict[str, str]) -> list[Difference]:
    """Every distribution where the environment and the lock disagree, by name."""
    out = []
    for name in sorted((set(pins) | set(present)) - {PROJECT}):
        want, have = pins.get(name), present.get(name)
        if want != have:
            out.append(Difference(name, want, have))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--diff", action="store_true",
                        help="list the differences and exit 0")
    args = parser.parse_args(argv)
    found = differences(locked(), installed())
    if args.diff:
        print(f"{len(found)} distributions differ from the lock" + (":" if found else ""))
        for item in found:
            print(f"  {item}")
        return 0
    for item in found:
        print(item, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
