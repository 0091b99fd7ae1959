"""A throw-away PostgreSQL server on loopback, for tests and benchmarks.

As root it runs the server as the unprivileged user ``nobody`` (PostgreSQL refuses to run
as root). Needs the server programs initdb, pg_ctl and postgres.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path


class MissingPostgresError(RuntimeError):
    """The PostgreSQL server programs are not installed."""


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    def __init__(self) -> None:
        tools = {n: _pg_bin(n) for n in ("initdb", "pg_ctl", "postgres")}
        missing = [n for n, p in tools.items() if p is None]
        if missing:
            raise MissingPostgresError(
                f"PostgreSQL server programs not found ({', '.join(missing)}): install the "
                "postgresql package (Debian: apt-get install postgresql) so the store's "
                "tests can run against a real server")
        self.tools = tools
        self.root = Path(tempfile.mkdtemp(prefix="xai-pg-"))
        self.root.chmod(0o755)
        self.data = self.root / "data"
        self.port = _free_port()
        self.user = "nobody" if os.geteuid() == 0 else None

    def _run(self, *args: str) -> None:
        cmd = list(args)
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self.data.mkdir(mode=0o700)
        if self.user:
            shutil.chown(self.root, self.user)
            shutil.chown(self.data, self.user)
        self._run(str(self.tools["initdb"]), "-D", str(self.data), "-U", "postgres",
                  "--auth=trust", "-E", "UTF8")
        self._run(str(self.tools["pg_ctl"]), "-D", str(self.data), "-l",
                  str(self.root / "server.log"), "-w", "-o",
                  f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                  "-c fsync=on -c synchronous_commit=on", "start")

    def stop(self) -> None:
        try:
            self._run(str(self.tools["pg_ctl"]), "-D", str(self.data), "-m", "fast", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def new_database(self) -> str:
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"
