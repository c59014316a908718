"""Headless chromium for the browser tests, benches and screenshot scripts: Debian's ``/usr/bin/chromium``
(or ``$SEGA_CHROMIUM``) through Python playwright, never a playwright-downloaded browser."""

from __future__ import annotations

import os
from pathlib import Path

CHROMIUM_PATH = os.environ.get("SEGA_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--disable-quic", "--no-first-run",
]  # fmt: skip


def launch_chromium(playwright):
    """Headless chromium through Python playwright, with the flags the tests and the bench use."""
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    if not Path(CHROMIUM_PATH).exists():
        raise FileNotFoundError(f"chromium not found at {CHROMIUM_PATH}: apt-get install -y chromium (or set SEGA_CHROMIUM)")
    return playwright.chromium.launch(executable_path=CHROMIUM_PATH, headless=True, args=CHROMIUM_ARGS)
