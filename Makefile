# docpipe: `make demo` runs a real job offline, `make test` runs the suite, `make serve` runs the local stack.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000
EMULATOR_PORT ?= 4566
STAGE ?= dev

.PHONY: demo test serve bench soak deploy clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

demo: $(VENV)/.installed
	$(PY) -m devstack demo

test: $(VENV)/.installed
	$(PY) -m pytest

serve: $(VENV)/.installed
	$(PY) -m devstack serve --port $(PORT) --emulator-port $(EMULATOR_PORT)

$(VENV)/.bench-installed: $(VENV)/.installed requirements-bench.txt
	$(PY) -m pip install --quiet -r requirements-bench.txt
	touch $@

bench: $(VENV)/.bench-installed
	$(PY) -m bench

soak: $(VENV)/.installed
	$(PY) -m tests.faults --soak

deploy: $(VENV)/.installed
	$(PY) -m scripts.deploy --stage $(STAGE)

clean:
	rm -rf $(VENV) .local .pytest_cache
