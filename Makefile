# The two commands a new user needs (README): `make run` and `make test`.
# Each installs what it needs: Debian packages (scripts/system-deps.sh), then a virtualenv in .venv.

PYTHON ?= python3
VENV ?= .venv
# torch goes in before the project (README, "GPU machines"). Which build `torch==2.13.0` is depends on
# where pip finds it: from PyPI on Linux x86_64 it is the CUDA 13 build (~2.5 GB with its nvidia-*
# packages, NVIDIA driver >= 580; runs on the CPU where there is no GPU); on a machine whose pip config
# points at a local wheel directory (this repository's CI machines) it is the 2.13.0+cpu wheel there.
# TORCH_INDEX=cpu takes it from PyTorch's CPU index instead (the +cpu build, ~190 MB, no CUDA);
# TORCH_INDEX=<name> any other index at https://download.pytorch.org/whl/<name>, or a full URL.
# The default contacts no index but pip's own configuration.
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
TORCH_INDEX_URL = $(if $(findstring ://,$(TORCH_INDEX)),$(TORCH_INDEX),https://download.pytorch.org/whl/$(TORCH_INDEX))
PYTEST_ARGS ?=
BIN := $(VENV)/bin
export MUJOCO_GL ?= egl

.PHONY: run test bench install torch-check clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/system-deps.sh
	scripts/system-deps.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"$(if $(TORCH_INDEX), --index-url "$(TORCH_INDEX_URL)")
	$(BIN)/python -m pip install -q -e ".[dev]"
	-$(BIN)/python scripts/torch-check.py
	touch $@

# One line: the torch version, CUDA or CPU build, and whether a GPU is usable (never fails).
torch-check:
	@$(BIN)/python scripts/torch-check.py

# The main job: a world model learnt from pixels and planned with, beating a random policy in about 5 minutes on
# 2 cores (local Ray, embedded Redis, synthetic:reach; README "Set up and run").
run: install
	$(BIN)/orrery train --preset synthetic-reach --actors 1

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Speed figures, one JSON line per benchmark (not part of the test suite).
bench: install
	@for b in tests/benchmarks/bench_*.py; do echo "# $$b"; $(BIN)/python $$b; done

clean:
	rm -rf $(VENV) runs .pytest_cache
