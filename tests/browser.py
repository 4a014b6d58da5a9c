"""Debian's Chromium driven by Playwright, as every browser test starts it (never a download)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
"""Headless, as root, and no background connections (this machine's network is closed)."""


def why_no_chromium() -> str | None:
    """Why a browser test cannot run here, or None."""
    if not Path(CHROMIUM).exists() or importlib.util.find_spec("playwright") is None:
        return "needs /usr/bin/chromium and the playwright module"
    return None


def launch_chromium(playwright: Any) -> Any:
    """A Chromium browser from a `sync_playwright()` context."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
