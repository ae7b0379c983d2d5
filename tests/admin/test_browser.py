"""The admin page in a real browser: headless Chromium signs in, finds a failed intent,
replays it and sees it done. Screenshots are kept in the test's tmp dir.

Chromium and its driver are Debian's ``chromium`` and ``chromium-driver`` (``.ci/run``
installs them); selenium is pointed at the system's ``chromedriver``, never a download.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

from bridge.core.intents import Status
from tests.fixtures import stripe_builders as sb
from tests.fixtures.admin import ADMIN_TOKEN, drain_once
from tests.fixtures.pipeline import Pipeline

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip(
            "no headless Chromium: `apt-get install -y chromium chromium-driver` "
            "(.ci/run installs them)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in a container has no user namespace for the sandbox
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.implicitly_wait(5)
    try:
        yield driver
    finally:
        driver.quit()


def arrive(browser: WebDriver, by: str, value: str, text: str | None = None) -> WebElement:
    """The element the next page is known by, once the browser has loaded that page.

    A click that submits a form or follows a link returns before the next page is
    there; reading the old page then is a race. This waits for a condition, not a time
    (the bound only stops a broken page from hanging the suite)."""

    def found(driver: WebDriver) -> WebElement | bool:
        try:
            element = driver.find_element(by, value)
            return element if text is None or element.text == text else False
        except (NoSuchElementException, StaleElementReferenceException):
            return False

    element = WebDriverWait(browser, 30).until(found)
    assert isinstance(element, WebElement)
    return element


def shot(driver: WebDriver, tmp_path: Path, name: str) -> Path:
    path = tmp_path / "screenshots" / f"{name}.png"
    path.parent.mkdir(exist_ok=True)
    assert driver.save_screenshot(str(path))
    return path


async def test_sign_in_find_a_failed_intent_replay_it_and_see_it_done(
    admin: Pipeline, browser: WebDriver, tmp_path: Path
) -> None:
    # A key creation fails for good: Cryptolens is unavailable and one attempt is allowed.
    admin.sandbox.set_faults(script=[{"method": "key/CreateKey", "fault": "fail_before"}])
    event = sb.checkout_session()
    assert (await admin.post(event)).status_code == 200
    assert (await admin.post(event)).status_code == 200  # a duplicate
    assert (await admin.post(event, secret="whsec_someone_else")).status_code == 401
    await drain_once(admin)
    create = f"stripe:pi:{sb.ONE_OFF_PI}:create_key"
    assert admin.intents()[create].status == Status.FAILED.value

    # Signing in: the page sends a stranger to the login form.
    browser.get(f"{admin.url}/admin/")
    assert browser.current_url.endswith("/admin/login")
    browser.find_element(By.ID, "token").send_keys(ADMIN_TOKEN)
    shot(browser, tmp_path, "1-login")
    browser.find_element(By.ID, "sign-in").click()

    # The deliveries: the stored event, the duplicate and the refusal with its cause.
    arrive(browser, By.TAG_NAME, "h1", "Deliveries")
    causes = browser.find_element(By.ID, "causes").text
    assert "no_match" in causes and "duplicate" in causes
    assert browser.find_element(By.ID, "count-failed").text.startswith("1")
    shot(browser, tmp_path, "2-deliveries")

    # The failed intent, with Cryptolens' message.
    browser.find_element(By.ID, "count-failed").click()
    row = arrive(browser, By.CSS_SELECTOR, f'tr[data-intent="{create}"]')
    assert row.get_attribute("data-status") == "failed"
    assert "503" in row.text
    row.find_element(By.LINK_TEXT, create).click()
    arrive(browser, By.ID, "intent-status", "failed")
    shot(browser, tmp_path, "3-failed-intent")

    # The plan: what a replay would send, read from Cryptolens, nothing changed.
    browser.find_element(By.ID, "plan").click()
    calls = arrive(browser, By.ID, "plan-calls").text
    assert "key/CreateKey" in calls and "Period=30" in calls
    assert admin.counts()["keys_created"] == 0
    browser.back()

    # Replay, then a worker runs it.
    arrive(browser, By.ID, "replay").click()
    arrive(browser, By.ID, "notice", "replayed")
    assert browser.find_element(By.ID, "intent-status").text == "pending"
    await admin.drain()

    browser.refresh()
    arrive(browser, By.ID, "intent-status", "done")
    assert admin.counts()["keys_created"] == 1
    shot(browser, tmp_path, "4-done")

    # The license, with its key.
    browser.find_element(By.LINK_TEXT, f"stripe:pi:{sb.ONE_OFF_PI}").click()
    key = arrive(browser, By.ID, "license-key").text
    assert key == admin.only_key()["key"]
    assert ADMIN_TOKEN not in browser.page_source
    shot(browser, tmp_path, "5-license")
