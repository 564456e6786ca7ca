// Bundled by `make test-browser` (esbuild) into .browser/app-bridge.js for tests/browser/host.html: the host side
// of MCP Apps from the extension's own SDK (@modelcontextprotocol/ext-apps), so the card is checked against the
// reference host implementation rather than against a shim written alongside it.
import { AppBridge, PostMessageTransport } from "@modelcontextprotocol/ext-apps/app-bridge";

window.McpAppsHost = { AppBridge, PostMessageTransport };
