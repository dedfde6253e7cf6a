# Two entry points for a fresh machine: `make run` (set up, fetch the model, serve) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8080
MODEL ?= EDSR_x3

.PHONY: setup run test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

setup: $(VENV)/.installed

run: setup
	@$(VENV)/bin/sr-models fetch $(MODEL) || echo "warning: model $(MODEL) is not available; the service starts, jobs will fail until it is (see README: Models)"
	$(VENV)/bin/sr-web --host $(HOST) --port $(PORT)

test: setup
	$(PY) -m pytest

clean:
	rm -rf $(VENV) build *.egg-info
