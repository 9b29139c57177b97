# docpipe: `make demo` runs a real job offline, `make test` runs the suite, `make serve` runs the local stack.
# `make unit` runs the unit tests alone (no emulator, no network, seconds); `make lint` and `make typecheck` run
# ruff and mypy as configured in pyproject.toml, and `make test` runs both before the whole suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000
EMULATOR_PORT ?= 4566
STAGE ?= dev

# The Lambda runtime is pinned here (.chalice/python-version): Chalice packages for the Python it runs under, so
# packaging and deploying happen in a virtualenv of that version, found through pyenv whatever the default is.
LAMBDA_PYTHON_VERSION := $(strip $(file < .chalice/python-version))
DEPLOY_VENV := .venv-deploy
DEPLOY_PY := $(DEPLOY_VENV)/bin/python
# What the Lambda runtime itself provides next to the function and its layer: boto3 (for the rehearsal).
LAMBDA_RUNTIME_DIR := build/lambda-runtime
BOTO3_PIN := $(shell sed -n 's/^boto3==//p' requirements-deploy.txt)

.PHONY: demo test unit lint typecheck browser serve bench soak package deploy llm-key clean

# The `docpipe` command (cli/, its own project, never in a Lambda package) is installed editable into .venv, with
# the versions of httpx and rich requirements-dev.txt pins: after `make test` or `make demo` it is .venv/bin/docpipe.
$(VENV)/.installed: requirements.txt requirements-dev.txt cli/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e cli
	touch $@

$(DEPLOY_VENV)/.installed: requirements.txt requirements-deploy.txt .chalice/python-version
	@interpreter=$$(scripts/lambda-python $(LAMBDA_PYTHON_VERSION)) || exit 1; \
	if ! $(DEPLOY_PY) -c 'import sys; sys.exit(f"{sys.version_info[0]}.{sys.version_info[1]}" != "$(LAMBDA_PYTHON_VERSION)")' 2>/dev/null; then \
		rm -rf $(DEPLOY_VENV) && echo "creating $(DEPLOY_VENV) with $$interpreter" && $$interpreter -m venv $(DEPLOY_VENV); \
	fi
	$(DEPLOY_PY) -m pip install --quiet --upgrade pip
	$(DEPLOY_PY) -m pip install --quiet -r requirements-deploy.txt
	touch $@

$(LAMBDA_RUNTIME_DIR)/.installed: requirements-deploy.txt | $(DEPLOY_VENV)/.installed
	rm -rf $(LAMBDA_RUNTIME_DIR)
	$(DEPLOY_PY) -m pip install --quiet --target $(LAMBDA_RUNTIME_DIR) boto3==$(BOTO3_PIN)
	touch $@

demo: $(VENV)/.installed
	$(PY) -m devstack demo

test: lint typecheck browser $(VENV)/.installed $(DEPLOY_VENV)/.installed $(LAMBDA_RUNTIME_DIR)/.installed
	$(PY) -m pytest

# Headless Chromium (Debian's package) for the dashboard's browser test; where apt cannot install it, that test
# skips and says why.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo -n)
browser:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
		{ DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends chromium || \
		  { $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends chromium; }; }; } \
		|| echo "chromium could not be installed: the dashboard's browser test will skip"

unit: $(VENV)/.installed
	$(PY) -m pytest tests/unit

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

serve: $(VENV)/.installed
	$(PY) -m devstack serve --port $(PORT) --emulator-port $(EMULATOR_PORT)

$(VENV)/.bench-installed: $(VENV)/.installed requirements-bench.txt
	$(PY) -m pip install --quiet -r requirements-bench.txt
	touch $@

bench: $(VENV)/.bench-installed
	$(PY) -m bench

soak: $(VENV)/.installed
	$(PY) -m tests.support.faults --soak

# The function zip, the dependencies' layer zip and the template Chalice generates, into build/<stage>/, checked;
# no AWS credentials needed. `make deploy` builds and checks the same artefacts the same way, then uploads them.
package: $(DEPLOY_VENV)/.installed $(LAMBDA_RUNTIME_DIR)/.installed
	$(DEPLOY_PY) -m scripts.package --stage $(STAGE)

deploy: $(DEPLOY_VENV)/.installed $(LAMBDA_RUNTIME_DIR)/.installed
	$(DEPLOY_PY) -m scripts.deploy --stage $(STAGE)

# Set or rotate the stage's LLM key in AWS Secrets Manager: read from OPENAI_API_KEY or asked for, never written.
llm-key: $(DEPLOY_VENV)/.installed
	$(DEPLOY_PY) -m scripts.llm_key --stage $(STAGE)

clean:
	rm -rf $(VENV) $(DEPLOY_VENV) build .local .pytest_cache .ruff_cache .mypy_cache
