"""The backup procedure of the operations guide, run as written: ``pg_dump`` a service's
PostgreSQL database, drop it, restore it, and ``xai-sandbox audit verify`` passes on the
restored log, which has every entry it had."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg

from pgserver import _pg_bin
from xai_sandbox.service.demo import setup_demo
from xai_sandbox.settings import Settings
from xai_sandbox.store import Store


def _tool(name: str, *args: str) -> None:
    binary = _pg_bin(name)
    assert binary is not None, f"{name} is not installed"
    done = subprocess.run([binary, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def test_pg_dump_drop_restore_then_the_log_verifies(tmp_path: Path, postgres) -> None:
    url = postgres.new_database()
    settings = Settings(data_dir=tmp_path, database_url=url, log_origin="test.example/backup")
    store = Store(settings)
    try:
        setup_demo(store)
        size, head = store.log.size(), store.log.root()
    finally:
        store.close()
    name = url.rsplit("/", 1)[1]
    where = ["-h", "127.0.0.1", "-p", str(postgres.port), "-U", "postgres"]
    dump = tmp_path / "backup.dump"
    _tool("pg_dump", *where, "--format=custom", f"--file={dump}", name)
    with psycopg.connect(f"host=127.0.0.1 port={postgres.port} user=postgres dbname=postgres",
                         autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    _tool("pg_restore", *where, f"--dbname={name}", "--no-owner", str(dump))

    env = {**os.environ, "XAI_SANDBOX_DATA_DIR": str(tmp_path), "COLUMNS": "200",
           "XAI_SANDBOX_DATABASE_URL": url, "XAI_SANDBOX_LOG_ORIGIN": settings.log_origin}
    verified = subprocess.run([sys.executable, "-m", "xai_sandbox.cli", "audit", "verify"],
                              capture_output=True, text=True, env=env, timeout=300)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    restored = Store(settings)
    try:
        assert restored.log.size() == size > 0
        assert restored.log.root() == head
    finally:
        restored.close()
