"""In headless Chromium: open a preview email, follow its unsubscribe link, click the
button, see the confirmation, undo — checking the database at each step."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import Engine, select

from newsletter.config import settings_from_mapping
from newsletter.db import session_scope
from newsletter.models import Suppression
from newsletter.web import create_app
from tests.support.http import serve_wsgi
from tests.support.unsubscribe import SECRET, SampleSite, make_sample_site

if TYPE_CHECKING:
    from selenium.webdriver.chrome.webdriver import WebDriver

pytestmark = pytest.mark.browser

EMAIL = "ada@example.org"


@pytest.fixture
def live_url(engine: Engine) -> Iterator[str]:
    """The web app on a real server at 127.0.0.1 (it needs only the list id and key)."""
    app = create_app(settings_from_mapping({}, env={}), engine, secret=SECRET.encode())
    with serve_wsgi(app) as url:
        yield url


@pytest.fixture
def site(engine: Engine, db_url: str, tmp_path: Path, live_url: str) -> SampleSite:
    """Sample feeds and profiles whose digests link to the live app."""
    return make_sample_site(tmp_path, engine, db_url, base_url=live_url)


def _state(engine: Engine) -> str | None:
    with session_scope(engine) as s:
        return s.scalar(select(Suppression.source).where(Suppression.email == EMAIL))


def _console_errors(driver: WebDriver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_unsubscribe_from_a_preview_email_and_undo(
    web_driver: WebDriver, site: SampleSite, live_url: str, engine: Engine, screenshot_dir: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    site.preview()
    (email_html,) = site.preview_dir.rglob(f"{EMAIL}*.html")
    wait = WebDriverWait(web_driver, 15)

    # The email as rendered by `newsletter preview`; its footer link goes to the app.
    web_driver.get(email_html.as_uri())
    footer_link = wait.until(
        ec.element_to_be_clickable((By.CSS_SELECTOR, "a[href*='/unsubscribe/']"))
    )
    link = footer_link.get_attribute("href")
    assert link is not None and link.startswith(f"{live_url}/unsubscribe/")
    web_driver.execute_script("arguments[0].scrollIntoView();", footer_link)
    web_driver.save_screenshot(str(screenshot_dir / "0-email-footer.png"))
    web_driver.get_log("browser")  # only the app's pages are checked for console errors
    footer_link.click()

    button = wait.until(ec.element_to_be_clickable((By.ID, "unsubscribe")))
    assert web_driver.current_url == link
    assert "Unsubscribe from" in web_driver.find_element(By.TAG_NAME, "h1").text
    web_driver.save_screenshot(str(screenshot_dir / "1-unsubscribe-page.png"))
    assert _state(engine) is None  # opening the link changed nothing

    button.click()
    confirmation = wait.until(ec.visibility_of_element_located((By.ID, "confirmation")))
    assert confirmation.text == "You are unsubscribed"
    web_driver.save_screenshot(str(screenshot_dir / "2-unsubscribed.png"))
    assert _state(engine) == "page"
    assert sorted(site.preview()) == ["grace@example.org"]  # no more digests for Ada

    web_driver.find_element(By.ID, "resubscribe").click()
    welcome = wait.until(ec.visibility_of_element_located((By.ID, "resubscribed")))
    assert welcome.text == "Welcome back"
    web_driver.save_screenshot(str(screenshot_dir / "3-resubscribed.png"))
    assert _state(engine) is None
    assert sorted(site.preview()) == [EMAIL, "grace@example.org"]

    web_driver.find_element(By.LINK_TEXT, "See your keywords").click()
    keywords = wait.until(ec.visibility_of_element_located((By.ID, "keywords")))
    assert "reinforcement learning" in keywords.text and "RLHF" in keywords.text
    web_driver.save_screenshot(str(screenshot_dir / "4-preferences.png"))
    assert _console_errors(web_driver) == []

    web_driver.get(link[:-3] + "xyz")  # a link mangled by a mail program
    wait.until(ec.visibility_of_element_located((By.ID, "invalid")))
    web_driver.save_screenshot(str(screenshot_dir / "5-invalid.png"))
    assert [e for e in _console_errors(web_driver) if "status of 400" not in e] == []
    assert _state(engine) is None

    # The stylesheet loaded (same origin, allowed by the CSP): the button is styled; and
    # the page follows a dark colour scheme on a phone-sized screen.
    web_driver.get(link)
    styled = wait.until(ec.element_to_be_clickable((By.ID, "unsubscribe")))
    assert styled.value_of_css_property("border-radius") == "8px"
    body = web_driver.find_element(By.TAG_NAME, "body")
    light_bg = body.value_of_css_property("background-color")
    web_driver.execute_cdp_cmd(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": "dark"}]},
    )
    web_driver.set_window_size(390, 760)
    try:
        dark_bg = body.value_of_css_property("background-color")
        web_driver.save_screenshot(str(screenshot_dir / "6-dark-narrow.png"))
    finally:
        web_driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
        web_driver.set_window_size(1000, 800)
    assert dark_bg != light_bg
    assert _console_errors(web_driver) == []
    assert _state(engine) is None
    assert len(list(screenshot_dir.iterdir())) == 7
