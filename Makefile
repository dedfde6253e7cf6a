# Two entry points for a fresh machine: `make run` (set up, fetch the model, serve) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8080
# What `make run` fetches: the default (EDSR x3, 38.5 MB) and a fast model for every other scale (under 5 MB
# together), so the page offers 2x, 3x, 4x and 8x. EDSR_x2 and EDSR_x4 (38 MB each) add "best" at 2x and 4x.
MODELS ?= EDSR_x3 FSRCNN_x3 ESPCN_x2 ESPCN_x4 LapSRN_x8
# The tested PyTorch release. Without an NVIDIA driver the CPU build is taken from PyTorch's CPU index
# (a few hundred MB instead of several GB of CUDA libraries).
TORCH ?= torch==2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: setup run test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@if ! $(PY) -c "import torch" 2>/dev/null; then \
		if [ -e /proc/driver/nvidia/version ]; then $(PY) -m pip install --quiet '$(TORCH)'; \
		else $(PY) -m pip install --quiet --retries 1 '$(TORCH)' --extra-index-url $(TORCH_CPU_INDEX); fi; \
	fi
	$(PY) -m pip install --quiet -e '.[worker,ray,test]'
	touch $@

setup: $(VENV)/.installed

run: setup
	@$(VENV)/bin/sr-models fetch $(MODELS) || echo "warning: not every model in '$(MODELS)' could be fetched; the page offers the ones that are there, and says so when the default is missing (see README: Models)"
	$(VENV)/bin/sr-web --host $(HOST) --port $(PORT)

test: setup
	$(PY) -m pytest

clean:
	rm -rf $(VENV) build *.egg-info
