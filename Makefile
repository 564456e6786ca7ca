# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the whole suite).
# Each creates .venv on first use from the project's own files.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-thirdparty test-browser lint typecheck check bench serve simulate clean

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

# Opt-in, never part of `make test`/.ci/run: real third-party MCP clients (OpenAI Agents SDK, MCP Inspector CLI)
# against crew-mcp. Everything they need lives under .thirdparty/, built from the registries (PyPI, npm):
# a venv with crew-mcp[dev,thirdparty], node 22 from npm (on node 20 npm silently picks Inspector 0.15.0),
# and the Inspector pinned. CREW_MCP_THIRDPARTY=1 turns a missing client into a failure instead of a skip.
TP := .thirdparty
TP_BIN := $(TP)/venv/bin
TP_STAMP := $(TP)/.installed
INSPECTOR_VERSION := 2.12.0

$(TP_STAMP): pyproject.toml
	$(PY) -m venv $(TP)/venv
	$(TP_BIN)/python -m pip install --quiet --upgrade pip
	$(TP_BIN)/python -m pip install --quiet -e '.[dev,thirdparty]'
	npm install --silent --no-fund --no-audit --prefix $(TP)/node node@22
	PATH="$(CURDIR)/$(TP)/node/node_modules/.bin:$$PATH" npm install --silent --no-fund --no-audit \
		--prefix $(TP)/inspector @modelcontextprotocol/inspector@$(INSPECTOR_VERSION)
	touch $(TP_STAMP)

test-thirdparty: $(TP_STAMP)
	PATH="$(CURDIR)/$(TP_BIN):$(CURDIR)/$(TP)/node/node_modules/.bin:$$PATH" CREW_MCP_THIRDPARTY=1 \
		CREW_MCP_INSPECTOR="$(CURDIR)/$(TP)/inspector/node_modules/.bin/mcp-inspector" \
		$(TP_BIN)/python -m pytest -m thirdparty $(PYTEST_ARGS)

# Opt-in, never part of `make test`/.ci/run: the MCP App (the run card) in real headless Chromium inside a test host
# page that speaks the app protocol with AppBridge from @modelcontextprotocol/ext-apps. Chromium is Debian's (apt,
# needs root); Playwright (PyPI) drives it with executable_path, into .venv; AppBridge and esbuild (npm, pinned) are
# bundled into .browser/app-bridge.js, a test-only artifact that is not committed. CREW_MCP_SCREENSHOTS=docs/images
# refreshes the card's screenshots in the docs.
BR := .browser
BR_STAMP := $(BR)/.installed
PLAYWRIGHT_VERSION := 1.65.*
EXT_APPS_VERSION := 2.0.3
MCP_TS_VERSION := 2.4.0
ZOD_VERSION := 4.6.7
ESBUILD_VERSION := 0.28.2

$(BR_STAMP): $(STAMP) tests/browser/host_entry.js
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
	$(BIN)/python -m pip install --quiet 'playwright==$(PLAYWRIGHT_VERSION)'
	mkdir -p $(BR)/node
	npm install --silent --no-fund --no-audit --prefix $(BR)/node \
		@modelcontextprotocol/ext-apps@$(EXT_APPS_VERSION) @modelcontextprotocol/client@$(MCP_TS_VERSION) \
		@modelcontextprotocol/core@$(MCP_TS_VERSION) zod@$(ZOD_VERSION) esbuild@$(ESBUILD_VERSION)
	NODE_PATH=$(CURDIR)/$(BR)/node/node_modules $(BR)/node/node_modules/.bin/esbuild tests/browser/host_entry.js \
		--bundle --format=iife --platform=browser --log-level=warning --outfile=$(BR)/app-bridge.js
	touch $(BR_STAMP)

test-browser: $(BR_STAMP)
	CREW_MCP_BROWSER=1 CREW_MCP_APP_BRIDGE=$(CURDIR)/$(BR)/app-bridge.js $(BIN)/python -m pytest -m browser $(PYTEST_ARGS)

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
	rm -rf $(VENV) $(TP) $(BR) .pytest_cache .mypy_cache .ruff_cache
