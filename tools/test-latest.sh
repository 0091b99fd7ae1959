#!/usr/bin/env bash
# `make test-latest`: lint and run the suite in a fresh environment holding the newest
# releases that pyproject.toml's ranges allow (torch stays on its CPU wheel), then list the
# packages whose versions differ from the lock, so that a failure can be traced to the
# release that caused it. The test that the environment equals the lock is left out here:
# this environment differs from the lock on purpose.
# Usage: tools/test-latest.sh PYTHON VENV
set -uo pipefail
python=${1:?usage: tools/test-latest.sh PYTHON VENV}
venv=${2:?usage: tools/test-latest.sh PYTHON VENV}
cd "$(dirname "$0")/.."
rm -rf "$venv"
set -e
"$python" -m venv "$venv"
py="$venv/bin/python"
"$py" -m pip install --quiet --upgrade pip
"$py" -m pip install --quiet torch==2.13.0
"$py" -m pip install --quiet -e '.[images,text,formats,dev]'
grep -v '^\s*#' requirements/no-deps.in | grep -v '^\s*$' \
  | xargs "$py" -m pip install --quiet --no-deps
set +e
status=0
"$venv/bin/ruff" check src tests benchmarks tools || status=1
"$venv/bin/mypy" || status=1
"$py" -m pytest -q --deselect tests/test_lock.py::test_environment_equals_the_lock || status=1
echo
echo "== newest releases against the lock (requirements/lock.txt):"
"$py" tools/lockcheck.py --diff
[ $status -eq 0 ] && echo "test-latest: passed" || echo "test-latest: FAILED (see above)"
exit $status
