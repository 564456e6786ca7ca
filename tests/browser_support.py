"""What the browser tests (test_apps_browser.py, test_inbox_browser.py) share: the Chromium they drive, how long a
page expectation may wait, and where screenshots go (``CREW_MCP_SCREENSHOTS=docs/images`` refreshes the docs')."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
CHROMIUM = os.environ.get("CREW_MCP_CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
UI = 15_000  # ms: the longest any expectation on the page waits


def require_chromium() -> None:
    """Fail (never skip: the browser tests are opt-in) when Debian's chromium is not installed."""
    if not os.path.isfile(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: run `make test-browser` (it installs Debian's chromium)", pytrace=False)


def screenshot_dir(tmp_path: Path) -> Path:
    """Where a test writes its screenshots: ``CREW_MCP_SCREENSHOTS`` (relative to the repo) or ``tmp_path``."""
    target = os.environ.get("CREW_MCP_SCREENSHOTS")
    path = (ROOT / target) if target else tmp_path
    path.mkdir(parents=True, exist_ok=True)
    return path
