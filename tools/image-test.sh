#!/usr/bin/env bash
# make image-test: build both images offline, bring deploy/compose.yaml up on loopback
# ports with throwaway secrets, run tools/stack_test.py through it (smoke path, then one
# API container and one job worker killed under load), and tear the stack down.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
started=$(date +%s)
tools/image.sh deps
$PY tools/wheelhouse.py wheelhouse
tools/image.sh build

project="xai-it-$$"
secrets=deploy/.secrets
compose=(podman-compose -p "$project" -f deploy/compose.yaml)
cleanup() {
  "${compose[@]}" down -v >/dev/null 2>&1 || true
  podman volume rm -f "${project}_xai-data" "${project}_pgdata" >/dev/null 2>&1 || true
  rm -rf "$secrets"
}
trap cleanup EXIT
rm -rf "$secrets" && mkdir -p "$secrets/app" "$secrets/db"
password=$($PY -c "import secrets; print(secrets.token_urlsafe(24))")
printf '%s' "$password" > "$secrets/db/db-password"
printf 'postgresql+psycopg://postgres:%s@db:5432/xai_sandbox' "$password" \
  > "$secrets/app/xai_sandbox_database_url"
# The signing key and its verifier list, made here and mounted read-only (kept apart
# from the data volume): the containers never write their own key.
$PY -c "import sys; from pathlib import Path; from xai_sandbox.audit.notes import KeyStore
KeyStore(Path(sys.argv[1]), sys.argv[2]).signer()" "$secrets/app/signing-key.pem" \
  "${XAI_LOG_ORIGIN:-bank.example/xai-sandbox/audit-log}"
# The pepper of the subjects' pseudonyms (HMAC key), shared by every process.
head -c 32 /dev/urandom > "$secrets/app/subject-pepper.bin"
chmod 0700 "$secrets/app" "$secrets/db"
chmod 0600 "$secrets"/app/* "$secrets"/db/*
chown -R 10001:10001 "$secrets/app"
chown -R "$(podman run --rm --entrypoint id "${XAI_PG_IMAGE:-localhost/xai-postgres:15}" -u 2>/dev/null)" "$secrets/db"

port() { $PY -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }
export XAI_API_1_PORT=$(port) XAI_API_2_PORT=$(port) XAI_DB_PORT=$(port)
export XAI_JOB_LEASE_SECONDS=5
up_log=$(mktemp)
"${compose[@]}" up -d > "$up_log" 2>&1 || { grep -v syslog "$up_log"; exit 1; }
rm -f "$up_log"
[ -z "${XAI_STACK_DEBUG:-}" ] || { echo "stack $project is up; press enter to tear it down"; read -r _; }
if ! $PY tools/stack_test.py --project "$project" \
    --api "http://127.0.0.1:$XAI_API_1_PORT" --api "http://127.0.0.1:$XAI_API_2_PORT"; then
  for c in $(podman ps -a --filter "name=$project" --format '{{.Names}}'); do
    echo "== $c: $(podman inspect --format '{{.State.Status}} {{.State.ExitCode}}' "$c")"
    podman logs --tail 20 "$c" 2>&1 | grep -v "^WARNING: Location"
  done
  exit 1
fi
echo "image-test passed in $(( $(date +%s) - started )) s"
