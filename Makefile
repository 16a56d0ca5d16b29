# make train   - set up .venv from the lock (if missing or stale) and run the training job
# make test    - set up .venv, Chromium and Ghostscript if missing, and run every test that runs here
# make test-fast - the unit and fuzz tiers (no TensorFlow, two workers), under a minute
# make bench   - training/inference/data benchmarks (not part of the tests)
# make image / make test-image - build the container / build it and run a tiny job inside it
# make test-serving - the SavedModels load and serve the same probabilities in TensorFlow 2.20 and 2.15
# make lock    - re-resolve requirements*.in into the exact lock files

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=
PYTEST_ARGS ?=

.PHONY: train test test-fast system-tools test-serving bench image image-serve test-image test-image-serve lock lint format clean help

help:
	@sed -n 's/^# //p' Makefile | head -8

$(STAMP): requirements-dev.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.lock
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

# The Node.js consumer's dependencies, when npm exists (its CPU binding ships in the package; the optional
# CUDA download is skipped because it needs a host this machine cannot reach).
NODE_STAMP := examples/node/node_modules/.installed
$(NODE_STAMP): examples/node/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  cd examples/node && ONNXRUNTIME_NODE_INSTALL_CUDA=skip npm ci --no-audit --no-fund --loglevel=error \
	  && touch node_modules/.installed; \
	else echo "npm not found: the Node.js consumer test will be skipped"; fi

# The browser consumer's onnxruntime-web and the test driver (playwright-core drives Debian's chromium).
WEB_STAMP := examples/web/node_modules/.installed
$(WEB_STAMP): examples/web/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  cd examples/web && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	else echo "npm not found: the browser test will be skipped"; fi

train: $(STAMP)
	$(PY) -m job train $(ARGS)

# What the tests need from Debian: Chromium (the page), Ghostscript (to prove Pillow never hands it a file).
# Installed with apt-get where it is missing; where apt-get exists but cannot run (not root), one line says
# what to install; on a machine without apt-get the tests that need them are skipped with that reason.
SYSTEM_TOOLS := chromium:chromium gs:ghostscript
system-tools:
	@missing=""; for pair in $(SYSTEM_TOOLS); do command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then echo "note: no apt-get: the tests that need$$missing are skipped"; exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then echo "error: the tests need$$missing: run 'sudo apt-get install$$missing', then 'make test'"; exit 1; fi; \
	echo "installing$$missing (apt-get)"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends$$missing >/dev/null

# The fast tier first, in its own process with TensorFlow unimportable (tests/unit/conftest.py), then the
# TensorFlow and end-to-end tiers on three workers, the slowest shown. Three on 2 cores: much of their time is
# waiting (on servers, on a hanging tracking server, on signals), so a third worker fills the cores (measured on
# 2 Xeon cores: 561 s with -n 2, 487 s with -n 3; 81% and 91% CPU). The tests that share a module fixture which
# trains or starts a server are one work unit (SHARED_SETUPS in tests/conftest.py), so it is built once.
XDIST ?= -n 3 --dist loadgroup
test: $(STAMP) $(NODE_STAMP) $(WEB_STAMP) system-tools lint test-fast
	$(PY) -m pytest $(XDIST) --durations=25 tests/tf tests/e2e $(PYTEST_ARGS)

# The unit tier and the fuzz tier (Hypothesis properties of the gates and parsers): no TensorFlow (unimportable
# here), no servers. FUZZ_EXAMPLES=N runs every property N times (the default keeps the fuzz tier near 30 s).
test-fast: $(STAMP)
	UNIT_TIER_BLOCKS_TENSORFLOW=1 $(PY) -m pytest -n 2 --durations=10 tests/unit tests/fuzz $(PYTEST_ARGS)

# The serving images' TensorFlow versions, each in its own venv under .venv-serving/ (made on first use).
test-serving: $(STAMP)
	$(PY) -m pytest -s tests/serving $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m bench.run $(if $(QUICK),--quick) $(ARGS)

image:
	infra/image/install-engine.sh
	infra/image/build.sh

# The model server's image (Dockerfile stage `serve`: ONNX Runtime, no TensorFlow), and its size.
image-serve:
	infra/image/install-engine.sh
	IMAGE=cifar10-job:serve VARIANT=serve infra/image/build.sh
	@engine=$$(command -v podman || command -v docker); $$engine image inspect cifar10-job:serve --format '{{.Size}}' \
	  | awk '{printf "cifar10-job:serve is %.0f MB\n", $$1 / 1e6}'

test-image-serve: $(STAMP) image-serve
	IMAGE=localhost/cifar10-job:serve $(PY) -m pytest -s tests/image/test_serve_image.py $(PYTEST_ARGS)

test-image: $(STAMP) image
	$(PY) -m pytest -s tests/image/test_image.py $(PYTEST_ARGS)

# ruff (lint + format check), the import-linter layering contracts (pyproject.toml), hadolint.
lint: $(STAMP)
	$(VENV)/bin/ruff check job bench tests
	$(VENV)/bin/ruff format --check job bench tests
	$(VENV)/bin/lint-imports
	$(VENV)/bin/hadolint Dockerfile

format: $(STAMP)
	$(VENV)/bin/ruff check --fix job bench tests
	$(VENV)/bin/ruff format job bench tests

lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv && .lock-venv/bin/pip install -q --upgrade pip
	.lock-venv/bin/pip install -q -r requirements.in
	(echo "# Exact runtime set, generated by 'make lock' from requirements.in (Python 3.11, linux x86_64)."; \
	 .lock-venv/bin/pip freeze) > requirements.lock
	.lock-venv/bin/pip install -q -r requirements-dev.in
	(echo "# Exact runtime + test set, generated by 'make lock' from requirements-dev.in (Python 3.11, linux x86_64)."; \
	 .lock-venv/bin/pip freeze) > requirements-dev.lock
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) artifacts .pytest_cache
