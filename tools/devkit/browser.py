"""Headless Chromium for the dashboard tests: Debian's `chromium` driven by Playwright
(from PyPI; its own browser download is never used: `make test` installs chromium
with apt). Every page opened through `Browser.open` records its console errors and
uncaught exceptions, so a test can say "no console errors" and mean it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from terrapin.gateway.errors import TerrapinError

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / ".cache" / "dashboard"


class BrowserMissing(TerrapinError):
    """Chromium or Playwright is not installed (make test installs both)."""


def find_chromium() -> str | None:
    if Path(CHROMIUM).exists():
        return CHROMIUM
    return shutil.which("chromium")


@dataclass
class Browser:
    context: Any
    errors: list[str] = field(default_factory=list)

    def open(self, url: str) -> Any:
        """A new page at `url`; its console errors go to `self.errors` (with the URL)."""
        page = self.context.new_page()
        page.on(
            "console",
            lambda msg: (
                self.errors.append(f"{page.url}: console {msg.type}: {msg.text}")
                if msg.type == "error"
                else None
            ),
        )
        page.on("pageerror", lambda exc: self.errors.append(f"{page.url}: uncaught {exc}"))
        page.goto(url, wait_until="load")
        return page

    def screenshot(self, page: Any, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path


@contextmanager
def chromium(**context_options: Any) -> Iterator[Browser]:
    """Headless Debian chromium; `context_options` go to Playwright's new_context
    (e.g. http_credentials for a gateway with a token)."""
    exe = find_chromium()
    if exe is None:
        raise BrowserMissing("no chromium at /usr/bin/chromium", hint="apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise BrowserMissing(
            "playwright is not installed", hint='pip install -e ".[test]"'
        ) from None
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(
            accept_downloads=True, viewport={"width": 1400, "height": 900}, **context_options
        )
        try:
            yield Browser(context)
        finally:
            context.close()
            browser.close()
