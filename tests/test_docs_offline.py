"""`/docs` and `/redoc` in a real headless browser with no internet: every asset
comes from the service itself (api/core/docs_assets.py).

FastAPI's own pages load Swagger UI and Redoc from a public CDN: without
internet they are a blank page. Here Debian's chromium, driven by Playwright
(never its own browser download), opens a real API process; any request to a
host other than the loopback one is aborted and fails the test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import BrowserContext, Page, Route, async_playwright
from playwright.async_api import Request as PlaywrightRequest

from tests.conftest import ADMIN_KEY, ROOT
from tests.processes import ApiProcess, api_env, running_api

LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
METHODS = {"get", "post", "put", "patch", "delete", "head", "options"}
CUSTOMERS = "/api/v1/auth/customers"  # an admin-key GET, to try from the page


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium; installed by scripts/install-system-deps.sh (make test)
    if missing. Skipped only where it cannot be installed (no apt-get); on CI a
    missing browser is a failure."""
    path = find_chromium()
    if path is None:
        subprocess.run(
            ["bash", str(ROOT / "scripts" / "install-system-deps.sh"), "--browser"],
            stdin=subprocess.DEVNULL,
            check=False,
        )
        path = find_chromium()
    if path is None:
        reason = "chromium is not installed and scripts/install-system-deps.sh could not install it"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="module")
async def api(settings, tmp_path_factory) -> AsyncIterator[ApiProcess]:
    async with running_api(api_env(settings), tmp_path_factory.mktemp("docs"), "docs") as proc:
        yield proc


class Offline:
    """A browser context that aborts, and remembers, every request that would
    leave the machine, and remembers failed requests and page errors (and the
    images the page's policy kept from being requested at all)."""

    def __init__(self) -> None:
        self.outside: list[str] = []
        self.failed: list[str] = []
        self.errors: list[str] = []
        self.refused: list[str] = []

    async def route(self, route: Route) -> None:
        url = urlsplit(route.request.url)
        if url.scheme in ("http", "https", "ws", "wss") and url.hostname not in LOOPBACK:
            self.outside.append(route.request.url)
            await route.abort("internetdisconnected")
        else:
            await route.continue_()

    def on_failed(self, request: PlaywrightRequest) -> None:
        # Refused by the page's Content-Security-Policy: the browser never sent it.
        # Only an image may be (Redoc's footer logo); a refused script or style
        # would be a page that does not work offline.
        if request.failure == "csp" and request.resource_type == "image":
            self.refused.append(request.url)
        else:
            self.failed.append(f"{request.url}: {request.failure}")

    def watch(self, page: Page) -> None:
        page.on("requestfailed", self.on_failed)
        page.on(
            "response",
            lambda r: self.failed.append(f"{r.url}: HTTP {r.status}") if r.status >= 400 else None,
        )
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    def assert_clean(self) -> None:
        assert not self.outside, f"requests left the machine: {self.outside}"
        assert not self.failed, f"failed requests: {self.failed}"
        assert not self.errors, f"page errors: {self.errors}"


@pytest.fixture
async def browser(chromium: str, tmp_path: Path) -> AsyncIterator[tuple[BrowserContext, Offline]]:
    offline = Offline()
    async with async_playwright() as p:
        context = await p.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a fresh profile every test
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_FLAGS,
        )
        try:
            await context.route("**/*", offline.route)
            yield context, offline
        finally:
            await context.close()


def operation_count(openapi: dict[str, Any]) -> int:
    return sum(1 for item in openapi["paths"].values() for method in item if method in METHODS)


async def test_swagger_ui_renders_offline_with_a_working_authorize(api: ApiProcess, browser):
    context, offline = browser
    base = f"http://127.0.0.1:{api.port}"
    openapi = httpx.get(f"{base}/openapi.json", timeout=30).json()
    page = await context.new_page()
    offline.watch(page)

    await page.goto(f"{base}/docs", wait_until="load")
    assert not offline.outside, f"requests left the machine: {offline.outside}"
    await page.locator(".opblock").first.wait_for(state="visible", timeout=60_000)
    assert await page.locator(".opblock").count() == operation_count(openapi)
    authorize = page.locator("button.authorize")
    await authorize.wait_for(state="visible")
    assert await page.locator("script[src*='//'], link[href*='//']").count() == 0  # no CDN

    # Authorize with the admin key, then try an operation: the key is sent.
    await authorize.click()
    dialog = page.locator(".dialog-ux .modal-ux")
    await dialog.wait_for(state="visible")
    assert "X-API-Key" in await dialog.inner_text()
    await dialog.locator("input").first.fill(ADMIN_KEY)
    await dialog.locator("button.modal-btn.auth.authorize").click()
    await dialog.locator("button.btn-done").click()

    operation = page.locator(f".opblock-get:has([data-path='{CUSTOMERS}'])").first
    await operation.locator(".opblock-summary").first.click()
    await operation.locator("button.try-out__btn").click()
    async with page.expect_response(lambda r: urlsplit(r.url).path == CUSTOMERS) as answer:
        await operation.locator("button.execute").click()
    response = await answer.value
    assert response.status == 200, await response.text()
    assert response.request.headers.get("x-api-key") == ADMIN_KEY
    offline.assert_clean()


async def test_redoc_renders_offline(api: ApiProcess, browser):
    context, offline = browser
    base = f"http://127.0.0.1:{api.port}"
    openapi = httpx.get(f"{base}/openapi.json", timeout=30).json()
    page = await context.new_page()
    offline.watch(page)

    await page.goto(f"{base}/redoc", wait_until="load")
    assert not offline.outside, f"requests left the machine: {offline.outside}"
    title = page.locator("h1", has_text=openapi["info"]["title"])
    await title.first.wait_for(state="visible", timeout=60_000)
    operations = page.locator("[data-section-id^='operation/']")
    assert await operations.count() == operation_count(openapi)
    assert await page.locator("script[src*='//'], link[href*='//']").count() == 0  # no CDN
    offline.assert_clean()
