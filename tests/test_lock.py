"""The environment the suite runs in is exactly the one the lock files name."""

from __future__ import annotations

import sys
from pathlib import Path

from lockcheck import LOCKS, Difference, differences, installed, locked


def test_environment_equals_the_lock() -> None:
    found = differences(locked(), installed())
    assert not found, "the environment drifted from requirements/*.txt:\n" + "\n".join(
        map(str, found))


def test_differences_name_every_kind_of_drift() -> None:
    pins = {"numpy": "2.0.0", "torch": "2.13.0+cpu", "gone": "1.0"}
    present = {"numpy": "2.1.0", "torch": "2.13.0+cpu", "extra": "3", "xai-sandbox": "0.1.0"}
    assert differences(pins, present) == [
        Difference("extra", None, "3"), Difference("gone", "1.0", None),
        Difference("numpy", "2.0.0", "2.1.0")]


def test_every_locked_line_is_pinned_with_a_hash() -> None:
    pins = locked()
    assert "torch" in pins and pins["torch"].startswith("2.13.0")
    for path in LOCKS:
        text = path.read_text(encoding="utf-8")
        blocks = [b for b in text.replace("\\\n", " ").splitlines()
                  if b.strip() and not b.lstrip().startswith("#")]
        assert blocks and all("==" in b and "--hash=sha256:" in b for b in blocks), path


def test_vendored_copies_on_sys_path_are_not_installed_packages() -> None:
    import ray
    vendored = Path(ray.__file__).parent / "thirdparty_files"
    sys.path.insert(0, str(vendored))
    try:
        assert "colorama" not in installed()
    finally:
        sys.path.remove(str(vendored))
