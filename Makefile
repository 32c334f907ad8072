# The two commands of the README. Both create or refresh .venv from the pinned dependencies first.
#   make demo   build recipes/tinyfar_synthdistill.yaml on the built-in procedural faces
#   make test   the test suite (fast set; `make test-all` adds the slow tests)
# The Docker images (Dockerfile, deploy/docker/gpu.Dockerfile) run these targets too, set through three variables:
#   EXTRAS     extras of pyproject.toml installed with the package (the GPU image: tensorrt)
#   VENV_ARGS  options of `python -m venv` (the GPU image: --system-site-packages, to use its base image's TensorRT)
#   DEMO_ARGS  options added to the demo's `factory build` (the GPU image: --set ...train.device=cuda)
PYTHON ?= python3
VENV ?= .venv
EXTRAS ?=
VENV_ARGS ?=
DEMO_ARGS ?=
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --disable-pip-version-check -q -c constraints.txt
# A stamp per content of the dependency files: editing the pins refreshes the venv, nothing else does.
DEPS_HASH := $(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-12)
BASE := $(VENV)/.installed-base-$(DEPS_HASH)$(if $(EXTRAS),-$(EXTRAS))
DEV := $(VENV)/.installed-dev-$(DEPS_HASH)

.PHONY: demo install test test-all lint bench clean

demo: $(BASE)
	$(VENV)/bin/factory build recipes/tinyfar_synthdistill.yaml $(DEMO_ARGS)

# The venv and the package with its pinned dependencies, nothing run: the Docker images' install step.
install: $(BASE)

# One pytest process per test module, TEST_JOBS modules at a time (tests/run_modules.py says why both).
TEST_JOBS ?= 2

test: $(DEV)
	$(PY) tests/run_modules.py --jobs $(TEST_JOBS) -m "not slow and not gpu and not tensorrt"

test-all: $(DEV)
	$(PY) tests/run_modules.py --jobs $(TEST_JOBS)

lint: $(DEV)
	$(VENV)/bin/ruff check factory tests benchmarks deploy
	$(VENV)/bin/ruff format --check factory tests benchmarks deploy
	$(VENV)/bin/hadolint --failure-threshold style Dockerfile deploy/docker/gpu.Dockerfile

bench: $(BASE)
	$(PY) benchmarks/run.py

$(BASE): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV_ARGS) $(VENV)
	$(PIP) -e '.$(if $(EXTRAS),[$(EXTRAS)])'
	rm -f $(VENV)/.installed-base-*
	touch $@

$(DEV): $(BASE)
	$(PIP) -e '.[dev]'
	@# The ssh transport's test starts its own sshd on 127.0.0.1: install it where Debian's apt works as root.
	@command -v sshd >/dev/null || test -x /usr/sbin/sshd || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && apt-get update -qq >/dev/null 2>&1 \
	  && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server >/dev/null 2>&1; } \
	  || echo "openssh-server could not be installed: the ssh transport test will skip, saying so"
	rm -f $(VENV)/.installed-dev-*
	touch $@

clean:
	rm -rf runs .pytest_cache

# The recipe reference (recipes/REFERENCE.md), generated from the schema; `make test` fails while it is stale.
.PHONY: docs
docs: $(BASE)
	$(PY) -m factory.recipe.reference
