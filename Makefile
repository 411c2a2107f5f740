# fastpapers developer entry points. `make demo` and `make test` each set up what they need
# on a fresh machine (a .venv with the pinned stack, the compiled extension).
PYTHON ?= python3
VENV   ?= .venv
VPY    := $(VENV)/bin/python
STAMP  := $(VENV)/.fastpapers-deps
NVCC   := $(shell command -v nvcc 2>/dev/null)
CUDA_HOME ?= $(if $(wildcard /usr/local/cuda),/usr/local/cuda,)
TORCH_NV_INC = $(shell $(VPY) -c "import os,torch;print(os.path.join(os.path.dirname(os.path.dirname(torch.__file__)),'nvidia','cu13','include'))" 2>/dev/null)
# Compile the CUDA sources whenever a toolkit is present, so a broken .cu cannot land.
FORCE_CUDA ?= $(if $(NVCC),1,0)
PYTEST_ARGS ?=

export TRITON_INTERPRET ?= 1

.PHONY: install deps build test bench demo clean

deps: $(STAMP)

$(STAMP): requirements-dev.txt requirements-nodeps.txt
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -r requirements-dev.txt
	$(VPY) -m pip install -q --no-deps -r requirements-nodeps.txt
	touch $(STAMP)

# Builds fastpapers._C in place (ninja, incremental), then registers the package and its
# console script as an editable install without building the extension a second time.
build: $(STAMP)
	CUDA_HOME=$(CUDA_HOME) FORCE_CUDA=$(FORCE_CUDA) MAX_JOBS=2 \
	CPLUS_INCLUDE_PATH=$(TORCH_NV_INC)$${CPLUS_INCLUDE_PATH:+:$$CPLUS_INCLUDE_PATH} \
	$(VPY) setup.py -q build_ext --inplace
	FASTPAPERS_NO_EXT=1 $(VPY) -m pip install -q --no-build-isolation --no-deps -e .

install: build

test: install
	$(VPY) -m pytest tests -q -p no:cacheprovider --timeout=900 $(PYTEST_ARGS)

# Peer vs ours on this machine's CPU (or GPU): the run ends with the table (case, peer, what
# each side computes, both medians, speed-up, ours vs the chip limit), also written to
# benchmarks/table.md. On a lent GPU use benchmarks/gpu/run.sh instead (it builds and tests too).
bench: install
	TRITON_INTERPRET=0 $(VPY) -m pytest benchmarks -q -p no:cacheprovider \
	  --benchmark-json=benchmarks/results.json --benchmark-columns=min,median,max,rounds

# The demo runs on the CPU: it builds the CPU kernels only (CUDA too where a GPU is visible),
# which keeps a fresh machine's set-up short; `make test` recompiles with the CUDA sources.
demo: $(STAMP)
	$(MAKE) build FORCE_CUDA=0
	$(VENV)/bin/fastpapers demo --out demo_out

clean:
	rm -rf build fastpapers/_C*.so *.egg-info
