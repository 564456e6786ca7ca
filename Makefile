# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the whole suite).
# Each creates .venv on first use from the project's own files.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-thirdparty test-oidc test-docker test-browser bundle lint typecheck check bench serve simulate clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/crew-mcp demo

# Two workers (this machine has two cores) and branch coverage with the floor set in pyproject.toml.
test: $(STAMP)
	bash scripts/ensure-redis
	bash scripts/ensure-haproxy
	$(BIN)/python -m pytest -n 2 --cov --cov-report=term $(PYTEST_ARGS)

# Opt-in, never part of `make test`/.ci/run: real third-party MCP clients against crew-mcp (docs/clients.md has the
# matrix). Everything they need lives under .thirdparty/, built from the registries (PyPI, npm), one venv per
# dependency set: `venv` runs pytest and holds crew-mcp[dev,thirdparty] (mcp 2.3: OpenAI Agents SDK, fastmcp 4.x);
# clients that need mcp<2 each get their own venv (tests/thirdparty/requirements-*.txt pins them) and run as
# scripts from tests/thirdparty/clients/. node 22 comes from npm (on node 20 npm silently picks Inspector 0.15.0,
# and the conformance suite cannot import globSync). Each piece has its own stamp, so a re-run installs nothing.
# CREW_MCP_THIRDPARTY=1 turns a missing client into a failure instead of a skip.
TP := .thirdparty
TP_BIN := $(TP)/venv/bin
TP_REQ := tests/thirdparty
TP_CLIENT_VENVS := mcp1 fastmcp2 crewai
TP_NODE_BIN := $(CURDIR)/$(TP)/node/node_modules/.bin
TP_NPM := PATH="$(TP_NODE_BIN):$$PATH" npm install --silent --no-fund --no-audit
INSPECTOR_VERSION := 2.12.0
CONFORMANCE_VERSION := 0.1.16
TP_STAMPS := $(TP)/venv/.installed $(TP_CLIENT_VENVS:%=$(TP)/%/.installed) \
	$(TP)/inspector/.installed $(TP)/conformance/.installed

$(TP)/venv/.installed: pyproject.toml
	$(PY) -m venv $(TP)/venv
	$(TP_BIN)/python -m pip install --quiet --upgrade pip
	$(TP_BIN)/python -m pip install --quiet -e '.[dev,thirdparty]'
	touch $@

$(TP)/%/.installed: $(TP_REQ)/requirements-%.txt
	$(PY) -m venv $(TP)/$*
	$(TP)/$*/bin/python -m pip install --quiet --upgrade pip
	$(TP)/$*/bin/python -m pip install --quiet -r $<
	touch $@

$(TP)/node/.installed:
	npm install --silent --no-fund --no-audit --prefix $(TP)/node node@22
	touch $@

$(TP)/inspector/.installed: $(TP)/node/.installed
	$(TP_NPM) --prefix $(TP)/inspector @modelcontextprotocol/inspector@$(INSPECTOR_VERSION)
	touch $@

$(TP)/conformance/.installed: $(TP)/node/.installed
	$(TP_NPM) --prefix $(TP)/conformance @modelcontextprotocol/conformance@$(CONFORMANCE_VERSION)
	touch $@

test-thirdparty: $(TP_STAMPS)
	PATH="$(CURDIR)/$(TP_BIN):$(TP_NODE_BIN):$$PATH" CREW_MCP_THIRDPARTY=1 \
		$(TP_BIN)/python -m pytest -m thirdparty $(PYTEST_ARGS)

# Opt-in, never part of `make test`/.ci/run: crew-mcp's OAuth resource server against a certified OpenID provider
# (panva's oidc-provider from npm, on node 22 as above), driven by the MCP SDK's OAuth client in both protocol eras.
OIDC_PROVIDER_VERSION := 9.13.3

$(TP)/oidc/.installed: $(TP)/node/.installed
	$(TP_NPM) --prefix $(TP)/oidc oidc-provider@$(OIDC_PROVIDER_VERSION)
	touch $@

test-oidc: $(STAMP) $(TP)/oidc/.installed
	PATH="$(TP_NODE_BIN):$$PATH" $(BIN)/python -m pytest -m oidc $(PYTEST_ARGS)

# Opt-in, never part of `make test`/.ci/run: the container image built and run by a real Docker engine.
# scripts/ensure-docker starts dockerd if none answers (installing Debian's docker.io when missing);
# scripts/build-image builds $(IMAGE) (from a Debian base made locally when no container registry answers);
# then the smoke tests (pytest -m docker) and the image's size, cold start and memory (scripts/measure_image.py).
IMAGE ?= crew-mcp:dev

test-docker: $(STAMP)
	bash scripts/ensure-docker
	bash scripts/build-image $(IMAGE)
	CREW_MCP_IMAGE=$(IMAGE) $(BIN)/python -m pytest -m docker $(PYTEST_ARGS)
	$(BIN)/python scripts/measure_image.py $(IMAGE)

# Opt-in: the Claude Desktop bundle (MCPB). The official packer (npm @anthropic-ai/mcpb) and uv (PyPI) go under
# .mcpb/, never global. scripts/build-bundle validates the manifest and packs dist/crew-mcp-<version>.mcpb (it
# prints the size and sha256 that server.json's mcpb package would need); scripts/check_bundle.py then unpacks it
# and runs it as its manifest says a host does (uv installs crew-mcp from the bundle), listing its tools.
MCPB := .mcpb
MCPB_VERSION := 2.1.2
UV_VERSION := 0.13.8

$(MCPB)/.installed:
	npm install --silent --no-fund --no-audit --prefix $(MCPB)/node @anthropic-ai/mcpb@$(MCPB_VERSION)
	$(PY) -m venv $(MCPB)/uv
	$(MCPB)/uv/bin/python -m pip install --quiet uv==$(UV_VERSION)
	touch $@

bundle: $(STAMP) $(MCPB)/.installed
	PATH="$(CURDIR)/$(MCPB)/node/node_modules/.bin:$$PATH" bash scripts/build-bundle
	PATH="$(CURDIR)/$(MCPB)/uv/bin:$$PATH" UV_CACHE_DIR="$(CURDIR)/$(MCPB)/uv-cache" \
		$(BIN)/python scripts/check_bundle.py dist/crew-mcp-$$($(BIN)/python -c 'import json; print(json.load(open("manifests/mcpb/manifest.json"))["version"])').mcpb

# Opt-in, never part of `make test`/.ci/run: the MCP App (the run card) in real headless Chromium inside a test host
# page that speaks the app protocol with AppBridge from @modelcontextprotocol/ext-apps, and the approvals inbox
# (tests/test_inbox_browser.py: a real OAuth sign-in, review, CSRF). Chromium is Debian's (apt, needs root);
# Playwright (PyPI) drives it with executable_path, into .venv; AppBridge and esbuild (npm, pinned) are bundled into
# .browser/app-bridge.js, a test-only artifact that is not committed. CREW_MCP_SCREENSHOTS=docs/images refreshes the
# card's and the inbox's screenshots in the docs.
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
	$(BIN)/ruff format --check crew_mcp tests bench scripts docker manifests
	$(BIN)/ruff check crew_mcp tests bench scripts docker manifests

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

bench: $(STAMP)
	bash scripts/ensure-redis
	bash scripts/ensure-haproxy
	$(BIN)/python -m bench

serve: $(STAMP)
	$(BIN)/crew-mcp serve

simulate: $(STAMP)
	$(BIN)/crew-mcp simulate --port 8787

clean:
	rm -rf $(VENV) $(TP) $(MCPB) $(BR) build dist .pytest_cache .mypy_cache .ruff_cache
