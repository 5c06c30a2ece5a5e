"""The API documentation and the page's own assets work with no internet access (headless Chromium)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from browser_env import LOCAL_HOSTS, block_internet, expect, page_server

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory, service_model_dir):
    with page_server(service_model_dir, tmp_path_factory.mktemp("docs")) as (base, _):
        yield base


@pytest.fixture()
def offline_page(browser):
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    failed: list[str] = []
    page.on("requestfailed", lambda r: failed.append(r.url))
    page.aborted = block_internet(page)
    page.failed = failed
    yield page
    context.close()


def _local_failures(page) -> list[str]:
    return [url for url in page.failed if urlsplit(url).hostname in LOCAL_HOSTS]


def _needed_from_outside(page) -> list[str]:
    """Aborted outside requests the page needs (anything but a decorative image, e.g. ReDoc's own logo)."""
    return [url for kind, url in page.aborted if kind != "image"]


def test_swagger_ui_renders_offline(offline_page, server):
    response = offline_page.goto(f"{server}/docs")
    assert response.status == 200
    expect()(offline_page.locator(".swagger-ui .opblock-summary-path", has_text="/predict").first).to_be_visible()
    expect()(offline_page.get_by_text("Read the lines of digits of an image").first).to_be_visible()
    assert offline_page.aborted == [] and _local_failures(offline_page) == []


def test_redoc_renders_offline(offline_page, server):
    response = offline_page.goto(f"{server}/redoc")
    assert response.status == 200
    expect()(offline_page.get_by_role("heading", name="Read one digit").first).to_be_visible()
    expect()(offline_page.get_by_text("POST").first).to_be_visible()
    assert _needed_from_outside(offline_page) == [] and _local_failures(offline_page) == []


def test_page_and_favicon_load_offline(offline_page, server):
    offline_page.goto(server)
    expect()(offline_page.locator("#model-info")).not_to_have_text("Loading model…")
    icon = offline_page.request.get(f"{server}/favicon.ico")
    assert icon.status == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    assert b"<svg" in icon.body()
    assert offline_page.aborted == [] and _local_failures(offline_page) == []
