# The two commands of the README. Both create or refresh .venv from the pinned dependencies first.
#   make demo   build recipes/tinyfar_synthdistill.yaml on the built-in procedural faces
#   make test   the test suite (fast set; `make test-all` adds the slow tests)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --disable-pip-version-check -q -c constraints.txt
# A stamp per content of the dependency files: editing the pins refreshes the venv, nothing else does.
DEPS_HASH := $(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-12)
BASE := $(VENV)/.installed-base-$(DEPS_HASH)
DEV := $(VENV)/.installed-dev-$(DEPS_HASH)

.PHONY: demo test test-all lint bench clean

demo: $(BASE)
	$(VENV)/bin/factory build recipes/tinyfar_synthdistill.yaml

test: $(DEV)
	$(PY) -m pytest -m "not slow and not gpu and not tensorrt" -q

test-all: $(DEV)
	$(PY) -m pytest -q

lint: $(DEV)
	$(VENV)/bin/ruff check factory tests benchmarks deploy
	$(VENV)/bin/ruff format --check factory tests benchmarks deploy

bench: $(BASE)
	$(PY) benchmarks/run.py

$(BASE): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -e .
	rm -f $(VENV)/.installed-base-*
	touch $@

$(DEV): $(BASE)
	$(PIP) -e '.[dev]'
	rm -f $(VENV)/.installed-dev-*
	touch $@

clean:
	rm -rf runs .pytest_cache
