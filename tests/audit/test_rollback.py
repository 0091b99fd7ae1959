"""Rollback and a rebuilt history, as a database administrator with the signing key could
make them: each passes a plain ``audit verify`` (the log is consistent with itself), and
each fails ``audit verify --trusted`` with a checkpoint saved before."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from xai_sandbox.settings import Settings
from xai_sandbox.store import Store

ORIGIN = "test.example/rollback"
FP = "ab" * 32


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XAI_SANDBOX_DATA_DIR": str(settings.data_dir),
           "XAI_SANDBOX_LOG_ORIGIN": settings.log_origin, "COLUMNS": "200",
           "XAI_SANDBOX_SIGNING_KEY": str(settings.resolved_signing_key())}
    return subprocess.run([sys.executable, "-m", "xai_sandbox.cli", "audit", *args],
                          capture_output=True, text=True, env=env, timeout=300)


def _fill(settings: Settings, n: int, tag: str) -> None:
    store = Store(settings)
    try:
        key, _ = store.register_model("m", "1", FP)
        for i in range(n):
            store.record_decision(model_key=key, subject_id=f"{tag}{i}", inputs={"i": i},
                                  output={"ok": True}, policy_version="p")
        store.log.checkpoint()
    finally:
        store.close()


def _settings(data_dir: Path, keys: Path) -> Settings:
    return Settings(data_dir=data_dir, log_origin=ORIGIN,
                    signing_key=keys / "signing-key.pem")


def test_a_restored_old_backup_is_caught_as_a_rollback(tmp_path: Path) -> None:
    live = _settings(tmp_path / "live", tmp_path / "keys")
    _fill(live, 3, "s")
    backup = tmp_path / "backup.db"
    shutil.copy(live.data_dir / "xai-sandbox.db", backup)  # an old backup, 4 entries
    _fill(live, 5, "t")
    saved = cli(live, "checkpoint")  # what an auditor or a witness keeps
    assert saved.returncode == 0, saved.stderr
    trusted = tmp_path / "checkpoint.txt"
    trusted.write_text(saved.stdout)
    extends = cli(live, "verify", "--trusted", str(trusted))
    assert extends.returncode == 0, extends.stdout + extends.stderr
    assert "extends the trusted checkpoint of 9 entries" in extends.stdout

    shutil.copy(backup, live.data_dir / "xai-sandbox.db")  # the DBA restores it
    for suffix in ("-wal", "-shm"):
        (live.data_dir / f"xai-sandbox.db{suffix}").unlink(missing_ok=True)
    plain = cli(live, "verify")
    assert plain.returncode == 0, plain.stdout  # consistent with itself
    caught = cli(live, "verify", "--trusted", str(trusted))
    assert caught.returncode == 1
    assert "rolled back: the trusted checkpoint covers 9 entries, the log now holds 4" \
        in caught.stdout


def test_a_history_rebuilt_and_re_signed_with_the_key_is_refused(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    real = _settings(tmp_path / "real", keys)
    _fill(real, 6, "s")
    trusted = tmp_path / "checkpoint.txt"
    trusted.write_text(cli(real, "checkpoint").stdout)
    forged = _settings(tmp_path / "forged", keys)  # same key, same origin, same size
    _fill(forged, 6, "forged-")
    plain = cli(forged, "verify")
    assert plain.returncode == 0, plain.stdout
    caught = cli(forged, "verify", "--trusted", str(trusted))
    assert caught.returncode == 1
    assert "not an extension of it (a different history of its first 7 entries)" \
        in caught.stdout


def test_a_checkpoint_of_another_log_or_key_is_refused(tmp_path: Path) -> None:
    ours = _settings(tmp_path / "ours", tmp_path / "keys")
    _fill(ours, 2, "s")
    other = Settings(data_dir=tmp_path / "other", log_origin="other.example/log")
    _fill(other, 2, "s")
    foreign = tmp_path / "foreign.txt"
    foreign.write_text(cli(other, "checkpoint").stdout)
    caught = cli(ours, "verify", "--trusted", str(foreign))
    assert caught.returncode == 1
    assert "trusted checkpoint" in caught.stdout
    missing = cli(ours, "verify", "--trusted", str(tmp_path / "nope.txt"))
    assert missing.returncode == 2
    assert "--trusted: must be a readable checkpoint file" in missing.stdout
