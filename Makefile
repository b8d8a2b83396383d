# `make test` and `make bench` set everything up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# A native llama.cpp build (GGML_NATIVE=ON) crashes on CPUs that report AMX the VM does not
# allow (see README). The AVX2 baseline is what the official CPU wheels use. For CUDA or Metal
# set CMAKE_ARGS yourself, e.g. CMAKE_ARGS="-DGGML_CUDA=on" make install.
CMAKE_ARGS ?= -DGGML_NATIVE=OFF
export CMAKE_ARGS

.PHONY: install lint test bench bench-full clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -e ".[test]"
	touch $@

install: $(VENV)/.installed

# the gate: lint, one format and types over the whole tree, before any test runs
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest -q

# The quick subset (7 tier 1-2 tasks) takes under a minute on 2 cores; the whole suite (29
# tasks) on the bundled 135M model took 337 s here (README, Bench), so it is `make bench-full`.
bench: $(VENV)/.installed
	$(VENV)/bin/localagent bench --quick

bench-full: $(VENV)/.installed
	$(VENV)/bin/localagent bench

clean:
	rm -rf $(VENV) .pytest_cache
