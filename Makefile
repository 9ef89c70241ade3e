# fleetnas developer tasks. `make demo` and `make test` are all a new checkout needs.
#
# The install step is a stamp file: it reruns only when pyproject.toml or this Makefile change
# (or the venv is gone), so a second `make test` goes straight to the tests.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip

# torch goes in first and pinned: an unpinned resolution pulls a multi-GB CUDA build, while the
# pinned CPU wheel is on this machine's disk. flwr 1.42 needs protobuf<7, which these grpc tools admit.
TORCH := torch==2.13.0
GRPC_TOOLS := grpcio-tools==1.81.1 grpcio-health-checking==1.81.1

PYTEST_ARGS ?=
DEMO_ARGS ?=

export PIP_NO_INPUT := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.DEFAULT_GOAL := help
.PHONY: help install venv demo test lint clean distclean

help:
	@echo "make demo       supernet -> search -> bundle -> adaptive runtime, then a federated round (installs on first run)"
	@echo "make test       the whole test suite (installs on first run)"
	@echo "make lint       ruff over the repo, mypy over runtime and search"
	@echo "make install    create $(VENV) and install fleetnas[all,dev] (also: make venv)"
	@echo "make clean      remove build artefacts and caches (keeps $(VENV))"
	@echo "make distclean  clean, and remove $(VENV)"

install venv: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Order-only on the interpreter: recreating the venv removes the stamp anyway, and the venv's
# own mtime must not force a reinstall.
$(STAMP): pyproject.toml Makefile | $(BIN)/python
	$(PIP) install --upgrade pip
	$(PIP) install $(TORCH)
	$(PIP) install $(GRPC_TOOLS)
	$(PIP) install -e '.[all,dev]'
	@touch $@

# The demo, then a small federated round over a simulated fleet that reuses the demo's predictor.
demo: $(STAMP)
	$(BIN)/fleetnas demo $(DEMO_ARGS)
	$(BIN)/fleetnas federate simulate --clients 10 --rounds 2 --epsilon 1 --utility-seeds 20 \
		--cache-dir out/demo/artefacts --out out/demo/federated

test: $(STAMP)
	$(BIN)/python -m pytest tests --durations=10 $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy runtime search

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .mypy_cache
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
