"""A real service on loopback for the tests: uvicorn serving the app in a thread, over a
fresh store (SQLite file or a database on the session's PostgreSQL server), with the demo
models and one principal per role."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from xai_sandbox.service import create_app
from xai_sandbox.service.demo import setup_demo
from xai_sandbox.settings import Settings
from xai_sandbox.store import Store


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    settings: Settings
    keys: dict[str, str]
    decisions: dict[str, str]
    url: str = ""
    _server: uvicorn.Server | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def start(self, **app_options: Any) -> LiveServer:
        port = free_port()
        config = uvicorn.Config(create_app(self.settings, **app_options), host="127.0.0.1",
                                port=port, log_level="warning", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("the service did not start")

    def stop(self) -> None:
        assert self._server is not None and self._thread is not None
        self._server.should_exit = True
        self._thread.join(30)

    def client(self, who: str | None = None, **headers: str) -> httpx.Client:
        if who is not None:
            headers["Authorization"] = f"Bearer {self.keys.get(who, who)}"
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


def wait_done(server: LiveServer, job_url: str, timeout: float = 120.0) -> dict[str, Any]:
    """Poll a job until it is done or failed (as an operator)."""
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    with server.client("olivia-operator") as c:
        while time.monotonic() < deadline:
            job = c.get(job_url).json()
            if job["status"] in ("done", "failed"):
                return job
            time.sleep(0.1)
    raise AssertionError(f"job not done in {timeout} s: {job}")


def make_settings(tmp: Path, database_url: str | None = None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"data_dir": tmp, "database_url": database_url,
                              "log_origin": "test.example/service",
                              "rate_limit_subject_per_minute": 10_000,
                              "rate_limit_key_per_minute": 100_000, "job_lease_seconds": 2.0,
                              "key_cache_seconds": 0.5}
    values.update(overrides)
    return Settings(**values)


def prepared(settings: Settings) -> LiveServer:
    store = Store(settings)
    try:
        made = setup_demo(store)
    finally:
        store.close()
    return LiveServer(settings, made["keys"], made["decisions"])
