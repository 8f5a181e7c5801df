# Two entry points for a fresh machine that has only Python 3.11 and make:
#   make test   create .venv, install sg2ada with its test extras, run the test suite
#   make demo   create .venv, install, build the built-in dataset, train the tiny preset on CPU
# SG2ADA_DEVICE=gpu selects the CUDA build of TensorFlow instead of the CPU one.
PYTHON ?= python3
VENV ?= .venv
SG2ADA_DEVICE ?= cpu
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(SG2ADA_DEVICE)
# The suite is CPU-bound and mostly single-threaded per test: one worker per core halves its time.
# Whole files per worker, in the order tests/conftest.py gives (files with slow tests first).
PYTEST_ARGS ?= -n auto --maxprocesses 4 --dist loadfile --no-loadscope-reorder

.PHONY: install test demo bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[$(SG2ADA_DEVICE),test,video]"
	@touch $(STAMP)

# Reading NVIDIA's PyTorch pickles needs torch. For the tests, take its CPU build (a few hundred MB)
# when the configured package indexes have it; PyPI's default build pulls gigabytes of CUDA
# libraries, so without a CPU build those tests skip, saying why.
TORCH_STAMP := $(VENV)/.installed-torch-cpu
$(TORCH_STAMP): $(STAMP)
	@$(PY) -m pip install --quiet "torch==2.13.0+cpu" 2>/dev/null \
	  || echo "note: no CPU build of torch 2.13.0 on the configured indexes: the NVIDIA PyTorch-pickle tests will skip"
	@touch $(TORCH_STAMP)

install: $(STAMP)

test: $(STAMP) $(TORCH_STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m sg2ada.cli.demo

bench: $(STAMP)
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
