# The two commands a new user needs (README): `make run` and `make test`.
# Each installs what it needs: Debian packages (scripts/system-deps.sh), then a virtualenv in .venv.

PYTHON ?= python3
VENV ?= .venv
# A local CPU build satisfies the project's torch range; set TORCH=torch==2.13.0+cu128 (etc.) for CUDA.
TORCH ?= torch==2.13.0
PYTEST_ARGS ?=
BIN := $(VENV)/bin
export MUJOCO_GL ?= egl

.PHONY: run test bench install clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/system-deps.sh
	scripts/system-deps.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

# The main job: a short real training run (local Ray, embedded Redis, DMC cartpole-swingup, debug sizes).
run: install
	$(BIN)/orrery train --preset dmc-cartpole-swingup+debug --actors 2 --budget-steps 3000

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Speed figures, one JSON line per benchmark (not part of the test suite).
bench: install
	@for b in tests/benchmarks/bench_*.py; do echo "# $$b"; $(BIN)/python $$b; done

clean:
	rm -rf $(VENV) runs .pytest_cache
