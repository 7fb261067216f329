# Every target sets itself up: a fresh machine needs only Python 3.11+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
UV_VERSION := 0.13.9

.PHONY: demo test test-fast lint typecheck bench dev emulator lock clean

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "uv==$(UV_VERSION)"
	$(BIN)/uv pip install --quiet --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

## Run the main job end to end on the bundled local provider (no key, no network).
demo: $(STAMP)
	$(BIN)/batch-pipelines demo

## Lint, format check and type check, then the whole test suite
## (PostgreSQL tests read BATCH_PIPELINES_TEST_POSTGRES_URL).
test: $(STAMP) lint typecheck
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

## ruff (lint and format, one width: 120) over the package, the tests and the benchmarks.
lint: $(STAMP)
	$(BIN)/ruff check -q batch_pipelines batch_pipelines_tests bench examples
	$(BIN)/ruff format --check -q batch_pipelines batch_pipelines_tests bench examples

## mypy on the package, strict on core/.
typecheck: $(STAMP)
	$(BIN)/mypy

## Speed and memory benchmarks; each prints its figures, its baseline and TARGET lines.
bench: $(STAMP)
	$(BIN)/python -m bench

## The Dagster UI on loopback, with the emulator beside it.
dev: $(STAMP)
	$(BIN)/batch-pipelines dev

emulator: $(STAMP)
	$(BIN)/batch-pipelines emulator

## Re-resolve the pinned dependencies after editing pyproject.toml.
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --extra test --python-version 3.11 -o requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache
