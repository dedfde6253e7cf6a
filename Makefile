# Two entry points for a fresh machine: `make run` (set up, fetch the model, serve) and `make test`.
# `make run` installs what serving needs (`.[worker]`); `make test` adds Ray and the test tools on top of it
# (a second stamp, so that a later `make run` does not install them again, nor `make test` the first part).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8080
# What `make run` fetches: the default (EDSR x3, 38.5 MB) and a fast model for every other scale (under 5 MB
# together), so the page offers 2x, 3x, 4x and 8x. EDSR_x2 and EDSR_x4 (38 MB each) add "best" at 2x and 4x.
# realesr-general-x4v3 and its denoising twin (4.9 MB each) restore damaged photos (noise, JPEG, blur) at 4x.
MODELS ?= EDSR_x3 FSRCNN_x3 ESPCN_x2 ESPCN_x4 LapSRN_x8 realesr-general-x4v3 realesr-general-wdn-x4v3
# The tested PyTorch pair: spandrel imports torchvision, which must be built for the installed torch (PyPI's
# torchvision on a `+cpu` torch fails: "operator torchvision::nms does not exist"), so both come from one source.
# Without an NVIDIA driver that is PyTorch's CPU index (a few hundred MB instead of several GB of CUDA libraries);
# with one, or where that index cannot be reached, the default builds of both.
TORCH ?= torch==2.14.1
TORCHVISION ?= torchvision==0.29.1
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_PAIR_CHECK := import torch, torchvision; torchvision.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)

.PHONY: setup setup-test run test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@if ! $(PY) -c "$(TORCH_PAIR_CHECK)" 2>/dev/null; then \
		if [ ! -e /proc/driver/nvidia/version ] && $(PY) -c "import urllib.request; urllib.request.urlopen('$(TORCH_CPU_INDEX)/torch/', timeout=15)" 2>/dev/null; then \
			echo "installing $(TORCH) and $(TORCHVISION) from PyTorch's CPU index"; \
			$(PY) -m pip install --quiet --index-url $(TORCH_CPU_INDEX) '$(TORCH)' '$(TORCHVISION)'; \
		else \
			[ -e /proc/driver/nvidia/version ] || echo "PyTorch's CPU index ($(TORCH_CPU_INDEX)) cannot be reached: installing the default builds of $(TORCH) and $(TORCHVISION) (with CUDA libraries; they run on the CPU too)"; \
			$(PY) -m pip install --quiet '$(TORCH)' '$(TORCHVISION)'; \
		fi; \
	fi
	@$(PY) -c "$(TORCH_PAIR_CHECK)" || { echo "torch and torchvision do not work together; remove $(VENV) and run make setup again"; exit 1; }
	$(PY) -m pip install --quiet -e '.[worker]'
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[worker,ray,test]'
	touch $@

setup: $(VENV)/.installed

setup-test: $(VENV)/.installed-test

run: setup
	@$(VENV)/bin/sr-models fetch $(MODELS) || echo "warning: not every model in '$(MODELS)' could be fetched; the page offers the ones that are there, and says so when the default is missing (see README: Models)"
	@$(VENV)/bin/sr-models scan >/dev/null || echo "warning: the checkpoints in the models folder could not be scanned; the page offers them once \`sr-models scan\` has run"
	$(VENV)/bin/sr-web --host $(HOST) --port $(PORT)

test: setup-test
	$(PY) -m pytest

clean:
	rm -rf $(VENV) build *.egg-info
