# docpipe: `make demo` runs a real job offline, `make test` runs the suite, `make serve` runs the local stack.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000
STAGE ?= dev

.PHONY: demo test serve deploy clean

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
	$(PY) -m devstack serve --port $(PORT)

deploy: $(VENV)/.installed
	$(PY) -m scripts.deploy --stage $(STAGE)

clean:
	rm -rf $(VENV) .local .pytest_cache
