# `make run` and `make test` bootstrap their own virtual environment on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: run demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The HTTP API on the embedded SQLite store (./var/gnlc.sqlite, or GNLC_DATABASE_URL), with its
# projection runner; the first start creates a secretariat token and prints it once.
run: $(STAMP)
	$(BIN)/gnlc serve

# The narrated demo of one intake year, on a fresh embedded SQLite store (./var/demo.sqlite).
demo: $(STAMP)
	rm -f var/demo.sqlite var/demo.sqlite-wal var/demo.sqlite-shm
	$(BIN)/gnlc --database-url sqlite:///./var/demo.sqlite --actor demo demo

test: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python benchmarks/admit.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
