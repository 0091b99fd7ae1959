"""The audit commands, run as a user runs them, against a store on disk."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import update

from xai_sandbox.audit.merkle import verify_consistency
from xai_sandbox.settings import Settings
from xai_sandbox.store import Store
from xai_sandbox.store import tables as t

FP = "ab" * 32


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XAI_SANDBOX_DATA_DIR": str(settings.data_dir),
           "XAI_SANDBOX_LOG_ORIGIN": settings.log_origin, "COLUMNS": "200"}
    if settings.database_url:
        env["XAI_SANDBOX_DATABASE_URL"] = settings.database_url
    return subprocess.run([sys.executable, "-m", "xai_sandbox.cli", "audit", *args],
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture
def filled(store: Store) -> Store:
    key, _ = store.register_model("m", "1", FP)
    for i in range(5):
        store.record_decision(model_key=key, subject_id=f"s{i}", inputs={"i": i},
                              output={"ok": i % 2 == 0}, policy_version="p")
    store.log.checkpoint()
    store.record_decision(model_key=key, subject_id="s9", inputs={}, output={},
                          policy_version="p")
    store.log.checkpoint()
    return store


def test_migrations_match_the_tables(store: Store) -> None:
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), t.metadata)
    assert diff == []


def test_verify_passes_then_names_the_tampered_entry(filled: Store, settings: Settings) -> None:
    ok = cli(settings, "verify")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "OK: 7 entries" in ok.stdout
    with filled.engine.begin() as conn:
        conn.execute(update(t.decisions).where(t.decisions.c.case_ref != "").values(
            policy_version="q"))
    bad = cli(settings, "verify")
    assert bad.returncode == 1
    assert "TAMPERED" in bad.stdout and "entry 1 (decision_recorded" in bad.stdout


def test_check_receipt_offline(filled: Store, settings: Settings, tmp_path: Path) -> None:
    receipt = tmp_path / "receipt.json"
    receipt.write_text(filled.receipt(3).to_json(), encoding="utf-8")
    key = tmp_path / "log.pub"
    key.write_text(cli(settings, "pubkey").stdout, encoding="utf-8")
    # No database needed: point the environment at an empty folder.
    empty = Settings(data_dir=tmp_path / "nowhere", log_origin="x")
    out = cli(empty, "check-receipt", str(receipt), "--pubkey", str(key))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "decision_recorded" in out.stdout
    doc = json.loads(receipt.read_text(encoding="utf-8"))
    doc["inclusion_proof"][0] = base64.b64encode(b"\0" * 32).decode()
    receipt.write_text(json.dumps(doc), encoding="utf-8")
    bad = cli(empty, "check-receipt", str(receipt), "--pubkey", str(key))
    assert bad.returncode == 1 and "INVALID" in bad.stdout
    receipt.write_text("{broken", encoding="utf-8")
    broken = cli(empty, "check-receipt", str(receipt), "--pubkey", str(key))
    assert broken.returncode == 1 and "must be valid JSON" in broken.stdout
    assert "Traceback" not in broken.stdout + broken.stderr
    wrong_key = cli(empty, "check-receipt", str(receipt), "--pubkey", "not-a-key")
    assert wrong_key.returncode == 1 and "verifier_key" in wrong_key.stdout


def test_prove_consistency(filled: Store, settings: Settings) -> None:
    out = cli(settings, "prove-consistency", "6", "7")
    assert out.returncode == 0, out.stdout + out.stderr
    doc = json.loads(out.stdout)
    dec = base64.b64decode
    verify_consistency(6, 7, dec(doc["old_root"]), dec(doc["new_root"]),
                       [dec(p) for p in doc["proof"]])
    bad = cli(settings, "prove-consistency", "7", "6")
    assert bad.returncode == 2 and "old_size" in bad.stdout


def test_export_witness_to_a_folder_and_an_http_endpoint(filled: Store, settings: Settings,
                                                         tmp_path: Path) -> None:
    folder = tmp_path / "witness"
    folder.mkdir()
    out = cli(settings, "export-witness", "--to", str(folder))
    assert out.returncode == 0, out.stdout + out.stderr
    assert (folder / "7.checkpoint").read_text(encoding="utf-8").startswith(
        f"{settings.log_origin}\n7\n")
    received: list[str] = []

    class Witness(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers["Content-Length"])).decode())
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    server = HTTPServer(("127.0.0.1", 0), Witness)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/checkpoints"
        posted = cli(settings, "export-witness", "--to", url)
        assert posted.returncode == 0, posted.stdout + posted.stderr
    finally:
        server.shutdown()
        server.server_close()
    assert received and received[0].startswith(f"{settings.log_origin}\n7\n")
    nowhere = cli(settings, "export-witness", "--to", str(tmp_path / "no" / "such" / "file"))
    assert nowhere.returncode == 2 and "must be a writable file or folder" in nowhere.stdout
    refused = cli(settings, "export-witness", "--to", "http://127.0.0.1:9/nothing")
    assert refused.returncode == 2 and "reachable witness" in refused.stdout


def test_erase_purge_and_key_rotation_commands(filled: Store, settings: Settings) -> None:
    out = cli(settings, "erase", "s1")
    assert out.returncode == 0 and "erased 1 payload" in out.stdout
    assert cli(settings, "purge").stdout.strip().startswith("purged 0")
    decision = filled.record_decision(model_key="m@1", subject_id="z", inputs={}, output={},
                                      policy_version="p").decision_id
    assert cli(settings, "hold", decision).returncode == 0
    assert filled.decision(decision)["legal_hold"]
    assert cli(settings, "hold", decision, "--release").returncode == 0
    assert not filled.decision(decision)["legal_hold"]
    missing = cli(settings, "hold", "no-such-decision")
    assert missing.returncode == 2 and "decision_id: must be a recorded decision" in missing.stdout
    old = cli(settings, "pubkey").stdout.strip()
    new = cli(settings, "rotate-key").stdout.strip()
    assert new != old
    assert cli(settings, "checkpoint").returncode == 0
    assert cli(settings, "verify").returncode == 0
