# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the whole suite).
# Each creates .venv on first use from the project's own files.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck check bench serve simulate clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/crew-mcp demo

test: $(STAMP)
	bash scripts/ensure-redis
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff format --check crew_mcp tests bench
	$(BIN)/ruff check crew_mcp tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

bench: $(STAMP)
	bash scripts/ensure-redis
	$(BIN)/python -m bench

serve: $(STAMP)
	$(BIN)/crew-mcp serve

simulate: $(STAMP)
	$(BIN)/crew-mcp simulate --port 8787

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
