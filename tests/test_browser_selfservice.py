"""In headless Chromium, the whole self-service path: the subscribe page, the
confirmation email in the preview outbox, confirming, a preference change, a feedback
click from a card of a rendered digest, and its undo — screenshots at desktop (1280)
and phone (390) width at each step, no console errors, the YAML file checked."""

from __future__ import annotations

import email
import re
import tomllib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from sqlalchemy import Engine

from newsletter.config import Settings, settings_from_mapping
from newsletter.pipeline.preview import run_preview
from newsletter.web import create_app
from tests.support.http import serve_wsgi
from tests.support.subscribers import Seed, add_entries, write_profile

if TYPE_CHECKING:
    from selenium.webdriver.chrome.webdriver import WebDriver

pytestmark = pytest.mark.browser

SECRET = "browser-selfservice-secret-0123456789"
ADDRESS = "grace@example.org"
WIDTHS = {"desktop": (1280, 900), "phone": (390, 844)}


class _Late:
    """A WSGI app set after the server started (the app's base_url is the server's URL)."""

    app: Any = None

    def __call__(self, environ: Any, start_response: Any) -> Any:
        return self.app(environ, start_response)


@pytest.fixture
def live(
    tmp_path: Path, db_url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, Settings]]:
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", SECRET)  # the preview's links, the app's key
    late = _Late()
    with serve_wsgi(late) as url:
        text = (
            f'[database]\nurl = "{db_url}"\n\n[newsletter]\nsubscribers_dir = "subscribers"\n'
            f'outbox_dir = "outbox"\nlist_id = "digest.browser.example"\n'
            f'list_name = "Browser Digest"\nbase_url = "{url}"\n'
        )
        write_profile(
            tmp_path / "subscribers", "ops.yaml", "email: ops@example.org\nkeywords: [lidar]\n"
        )
        settings = settings_from_mapping(tomllib.loads(text), base_dir=tmp_path, env={})
        late.app = create_app(settings, engine, secret=SECRET.encode())
        yield url, settings


def _console_errors(driver: WebDriver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _shooter(driver: WebDriver, folder: Path) -> Callable[[str], None]:
    def shot(name: str) -> None:
        for label, (w, h) in WIDTHS.items():
            driver.set_window_size(w, h)
            assert driver.execute_script("return window.innerWidth") <= w
            driver.save_screenshot(str(folder / f"{name}-{label}.png"))
        driver.set_window_size(*WIDTHS["desktop"])

    return shot


def _mail_to(settings: Settings, address: str) -> email.message.Message:
    sent = settings.newsletter.outbox_dir / "sent"
    mails = [email.message_from_bytes(p.read_bytes()) for p in sorted(sent.rglob("*.eml"))]
    found = [m for m in mails if m["To"] == address]
    assert len(found) == 1
    return found[0]


def test_subscribe_confirm_edit_and_tune_from_a_card_in_chromium(
    web_driver: WebDriver, live: tuple[str, Settings], engine: Engine, screenshot_dir: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    url, settings = live
    wait = WebDriverWait(web_driver, 15)
    shot = _shooter(web_driver, screenshot_dir)
    profile = settings.newsletter.subscribers_dir / "self-service" / "grace_at_example.org.yaml"
    web_driver.set_window_size(*WIDTHS["desktop"])
    web_driver.get_log("browser")  # a clean log for this test

    # 1. The subscribe page, filled in as a person would.
    web_driver.get(f"{url}/subscribe")
    wait.until(ec.element_to_be_clickable((By.ID, "subscribe")))
    web_driver.find_element(By.ID, "email").send_keys(ADDRESS)
    web_driver.find_element(By.ID, "name").send_keys("Grace")
    web_driver.find_element(By.ID, "keywords").send_keys("diffusion model\nretrieval ^2")
    zone = web_driver.find_element(By.ID, "timezone").get_attribute("value")
    assert zone  # prefilled (by the browser's script, or the default)
    shot("1-subscribe")
    web_driver.find_element(By.ID, "subscribe").click()
    wait.until(ec.visibility_of_element_located((By.ID, "sent")))
    shot("2-sent")
    assert not profile.exists()  # nothing before the click

    # 2. The confirmation email in the preview outbox; its link, then the button.
    body = _mail_to(settings, ADDRESS).get_payload(decode=True)
    assert isinstance(body, bytes)
    m = re.search(re.escape(url) + r"/subscribe/confirm/[A-Za-z0-9_-]+", body.decode())
    assert m
    web_driver.get(m.group(0))
    wait.until(ec.element_to_be_clickable((By.ID, "confirm")))
    shot("3-confirm")
    assert not profile.exists()
    web_driver.find_element(By.ID, "confirm").click()
    wait.until(ec.visibility_of_element_located((By.ID, "confirmed")))
    shot("4-confirmed")
    assert yaml.safe_load(profile.read_text(encoding="utf-8"))["keywords"] == [
        "diffusion model",
        {"term": "retrieval", "weight": 2},
    ]

    # 3. A preference change: preview what it would send, then save.
    web_driver.find_element(By.ID, "preferences").click()
    keywords = wait.until(ec.visibility_of_element_located((By.ID, "keywords")))
    keywords.clear()
    keywords.send_keys("diffusion model\nweather forecasting")
    web_driver.find_element(By.ID, "preview-button").click()
    wait.until(ec.visibility_of_element_located((By.ID, "preview")))
    shot("5-preferences-preview")
    web_driver.find_element(By.ID, "save").click()
    wait.until(ec.visibility_of_element_located((By.ID, "saved")))
    shot("6-preferences-saved")
    saved = profile.read_bytes()
    assert yaml.safe_load(saved)["keywords"] == ["diffusion model", "weather forecasting"]
    assert _console_errors(web_driver) == []

    # 4. A digest is rendered; its card's "More like this" link, the button, then Undo.
    now = datetime.now(UTC)
    add_entries(engine, [Seed(title="A diffusion model for weather", first_seen=now)])
    out = settings.newsletter.outbox_dir.parent / "preview"
    run_preview(engine, settings, now=now + timedelta(minutes=1), out_dir=out, emails=[ADDRESS])
    (email_html,) = out.rglob(f"{ADDRESS}.html")
    web_driver.get(email_html.as_uri())
    more = wait.until(ec.element_to_be_clickable((By.LINK_TEXT, "More like this")))
    assert (more.get_attribute("href") or "").startswith(f"{url}/feedback/")
    assert web_driver.find_element(By.LINK_TEXT, "Fewer like this")
    web_driver.execute_script("arguments[0].scrollIntoView();", more)
    shot("7-email-card")
    web_driver.get_log("browser")  # only the app's pages are checked for console errors
    more.click()
    wait.until(ec.element_to_be_clickable((By.ID, "apply")))
    shot("8-feedback-ask")
    assert profile.read_bytes() == saved  # opening the link changed nothing
    web_driver.find_element(By.ID, "apply").click()
    changed = wait.until(ec.visibility_of_element_located((By.ID, "changed")))
    assert "diffusion model" in changed.text
    diff = web_driver.find_element(By.ID, "diff").text
    assert "weight: 2" in diff
    shot("9-feedback-done")
    tuned = yaml.safe_load(profile.read_bytes())["keywords"]
    assert tuned[0] == {"term": "diffusion model", "weight": 2}
    web_driver.find_element(By.ID, "undo").click()
    wait.until(ec.visibility_of_element_located((By.ID, "undone")))
    shot("10-undone")
    assert profile.read_bytes() == saved  # byte for byte
    assert _console_errors(web_driver) == []
    assert len(list(screenshot_dir.glob("*.png"))) == 2 * 10
