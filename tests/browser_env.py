"""Shared pieces of the browser tests: headless Chromium, a real uvicorn server with the test model, and
Playwright's `expect` with a patient timeout."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from live_server import live_server

ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking"]
LOCAL_HOSTS = {"127.0.0.1", "localhost"}


@contextmanager
def launch(executable: Path) -> Iterator[object]:
    """Chromium at `executable` (the `chromium` fixture: Debian's, checked by `require_tool`) driven by Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(executable), args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def page_server(model_dir: Path, tmp: Path, **env: str) -> Iterator[tuple[str, Path]]:
    """uvicorn serving `model_dir`; yields (base URL, feedback database path)."""
    full = {"OCR_MODEL_PATH": str(model_dir), "OCR_FEEDBACK_DB": str(tmp / "feedback.db"), **env}
    with live_server(full, tmp / "server.log") as base:
        yield base, tmp / "feedback.db"


def block_internet(page) -> list[tuple[str, str]]:
    """Abort every request to a host other than this machine; returns the aborted (resource type, URL)s."""
    aborted: list[tuple[str, str]] = []

    def handle(route) -> None:
        if urlsplit(route.request.url).hostname in LOCAL_HOSTS or route.request.url.startswith("data:"):
            route.continue_()
        else:
            aborted.append((route.request.resource_type, route.request.url))
            route.abort()

    page.route("**/*", handle)
    return aborted


def expect():
    """Playwright's `expect` with a 10 s timeout (the machine may be busy)."""
    from playwright.sync_api import expect as _expect

    _expect.set_options(timeout=10_000)
    return _expect


def wait_answer(page) -> None:
    """Wait until the page shows a final answer (or an error) for what was last drawn or uploaded."""
    expect()(page.locator("#result[data-state=done], #result[data-state=error]")).to_have_count(1)
