"""Headless Chromium for the real-browser tests, driven by Playwright.

Playwright drives the system's Chromium (Debian's ``chromium`` package; ``.ci/run`` installs
it): nothing is downloaded. Without it the browser tests fail and say how to install it;
``WSGATE_SKIP_BROWSER=1`` skips them instead, on a machine that cannot have a browser.
``WSGATE_CHROMIUM`` points at another Chromium or Chrome binary.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

SKIP_VARIABLE = "WSGATE_SKIP_BROWSER"
BROWSER_VARIABLE = "WSGATE_CHROMIUM"
INSTALL_HINT = (
    "install it with `apt-get install -y chromium chromium-driver` (Debian; .ci/run does), "
    f"or point {BROWSER_VARIABLE} at a Chromium or Chrome binary. To skip the browser tests on "
    f"a machine that cannot have a browser, set {SKIP_VARIABLE}=1."
)

# Without the background-networking flags Chromium keeps dialling out, and a closed network
# refuses those connections; --disable-quic keeps it on plain TCP.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

EXPECT_TIMEOUT_MS = 20_000
"""How long a Playwright ``expect`` waits for the page to show something; the box is slow."""

ARTIFACTS = Path(
    os.environ.get("WSGATE_ARTIFACTS", Path(__file__).resolve().parents[2] / "build" / "browser")
)
"""Where screenshots of the page are kept (``build/browser/`` unless ``WSGATE_ARTIFACTS``)."""

try:
    from playwright.sync_api import BrowserContext, Page, expect, sync_playwright
except ImportError as exc:
    if os.environ.get(SKIP_VARIABLE) != "1":
        raise ImportError(
            "the browser tests need Playwright (the dev extra): pip install -e '.[dev]'. "
            f"Set {SKIP_VARIABLE}=1 to skip them."
        ) from exc


def chromium_path() -> str | None:
    """The Chromium binary to drive: ``WSGATE_CHROMIUM``, else the first one on PATH."""
    configured = os.environ.get(BROWSER_VARIABLE)
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found is not None:
            return found
    return None


@pytest.fixture(scope="module")
def chromium() -> Iterator[BrowserContext]:
    """One headless Chromium with a fresh profile, for a test module.

    Not for the session: Playwright's sync API runs an event loop in the test thread while it
    is open, and the async tests that follow could not start theirs.
    """
    path = chromium_path()
    if path is None:
        pytest.fail(f"Chromium was not found: {INSTALL_HINT}", pytrace=False)
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    with (
        sync_playwright() as playwright,
        tempfile.TemporaryDirectory(prefix="wsgate-chromium-") as profile,
    ):
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=path, headless=True, args=CHROMIUM_ARGS
        )
        context.set_default_timeout(EXPECT_TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()


@dataclass
class Tab:
    """A page of the browser, with what it did that a test may check."""

    page: Page
    sockets: list[str] = field(default_factory=list)
    """The URL of every WebSocket the page opened."""
    errors: list[str] = field(default_factory=list)
    """Uncaught JavaScript exceptions."""

    def text(self, element_id: str) -> str:
        return self.page.locator(f"#{element_id}").inner_text()

    def wait_until(self, expression: str, arg: Any = None) -> None:
        """Wait until the JavaScript ``expression`` (a function) returns something truthy."""
        self.page.wait_for_function(expression, arg=arg, timeout=EXPECT_TIMEOUT_MS)


@pytest.fixture
def open_tab(chromium: BrowserContext) -> Iterator[Callable[[str], Tab]]:
    """Open a URL in a new tab; every tab is closed when the test ends.

    A test fails if JavaScript threw an uncaught exception in one of its tabs.
    """
    tabs: list[Tab] = []

    def open_(url: str) -> Tab:
        tab = Tab(chromium.new_page())
        tab.page.on("websocket", lambda socket: tab.sockets.append(socket.url))
        tab.page.on("pageerror", lambda error: tab.errors.append(str(error)))
        tabs.append(tab)
        tab.page.goto(url)
        return tab

    yield open_
    for tab in tabs:
        tab.page.close()
    errors = [error for tab in tabs for error in tab.errors]
    assert not errors, f"JavaScript errors in the page: {errors}"
