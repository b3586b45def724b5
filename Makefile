# Two commands on a fresh machine: `make demo` (offline sparse-coding demo) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
# The pinned torch, installed before the package so that its requirement never pulls the
# newest one. TORCH holds pip's arguments: add `--index-url https://download.pytorch.org/whl/cpu`
# for the CPU-only build where pip sees only PyPI (whose Linux wheel bundles CUDA). On a GPU
# machine install your CUDA build of torch into $(VENV) first; it is kept.
TORCH  ?= torch==2.13.0
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: install demo test lint benchmarks gpu-check clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/latentebm sparse-coding --dataset mnist --sample --epochs 4 --init data --out runs/demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts

test: lint
	$(BIN)/python -m pytest -n 2 tests

benchmarks: $(STAMP)
	$(BIN)/python benchmarks/run.py

# On the device machine (CUDA torch in $(VENV)): tests with --device cuda, B1 at 100 000
# signals, FISTA vs matmul, LISTA and VAE throughput -> benchmarks/results/GPU.md (< 8 min).
gpu-check: $(STAMP)
	$(BIN)/python benchmarks/gpu.py --device cuda

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
