"""The buyer's success page in headless Chromium: pending, it refreshes itself until the
key is made; then it shows the key, and its copy button copies it. On both databases."""

from __future__ import annotations

from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.admin.test_browser import arrive, browser, shot
from tests.fixtures import stripe_builders as sb
from tests.fixtures.pipeline import Pipeline
from tests.stripe.test_lookup import LOOKUP_CONFIG, deliver

__all__ = ["browser"]  # the fixture, used by name


@pytest.fixture
def bridge_config() -> str:
    return LOOKUP_CONFIG


async def test_page_waits_for_the_key_then_copies_it(
    bridge: Pipeline, browser: WebDriver, tmp_path: Path
) -> None:
    await deliver(bridge, sb.checkout_session())
    browser.get(f"{bridge.url}/checkout/{sb.SESSION}/license")
    assert arrive(browser, By.ID, "pending").text.startswith("Your payment went through")
    shot(browser, tmp_path, "pending")
    await bridge.drain()  # the key is made while the page is open
    key = bridge.only_key()["key"]
    # The page reloads itself (no one touches the browser) and shows the key.
    assert arrive(browser, By.ID, "key", text=key).text == key
    assert browser.find_element(By.ID, "product").text == "1001"
    shot(browser, tmp_path, "ready")
    browser.find_element(By.ID, "copy").click()
    # The copy script runs under the page's own Content-Security-Policy (by its hash).
    assert arrive(browser, By.ID, "copy", text="Copied").text == "Copied"


async def test_unknown_session_page_keeps_trying(bridge: Pipeline, browser: WebDriver) -> None:
    browser.get(f"{bridge.url}/checkout/{sb.SESSION}/license")
    assert arrive(browser, By.ID, "unknown").text.startswith("Purchase not found yet")
    await deliver(bridge, sb.checkout_session())  # the webhook arrives late
    assert arrive(browser, By.ID, "pending")
