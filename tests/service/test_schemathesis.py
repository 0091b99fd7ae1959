"""Schemathesis against the live service's OpenAPI document: generated requests (valid and
invalid) for every operation, sent with a key that holds every staff role so that each
route runs past its role check; no server error, and every response matches the
documented schema and content type. Bounded: a fixed number of examples per operation and
a time budget (``--max-time``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from xai_sandbox.store import Store
from xai_sandbox.store.accounts import Accounts

ST = Path(sys.executable).with_name("st")


@pytest.fixture(scope="module")
def fuzz_key(live):
    store = Store(live.settings)
    try:
        accounts = Accounts(store.engine, store.writer)
        accounts.create_principal("fuzzer", ["operator", "reviewer", "compliance_officer",
                                             "auditor", "admin"])
        return accounts.issue_key("fuzzer")
    finally:
        store.close()


def test_no_server_error_and_responses_match_the_schema(live, fuzz_key, tmp_path):
    # The first text explanation loads the MiniLM model (tens of seconds on a loaded CI
    # machine): loaded once here, so the fuzzer's per-request timeout measures requests.
    warm = httpx.post(f"{live.url}/v1/explain/text", timeout=300,
                      headers={"Authorization": f"Bearer {fuzz_key}"},
                      json={"model_id": "minilm-sentiment", "text": "The fee was unfair."})
    assert warm.status_code == 200, warm.text
    run = subprocess.run(
        [str(ST), "run", f"{live.url}/openapi.json", "--checks",
         "not_a_server_error,response_schema_conformance,content_type_conformance",
         "--max-examples", "8", "--max-time", "100", "--seed", "1", "--workers", "1",
         "--header", f"Authorization: Bearer {fuzz_key}", "--request-timeout", "60",
         "--report", "junit", "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=400, cwd=tmp_path)  # its cache goes there
    output = run.stdout + run.stderr
    (tmp_path / "schemathesis.txt").write_text(output)
    assert run.returncode == 0, output[-6000:]
    assert "passed" in output.lower()
