"""A rendered digest in a real browser: headless Chromium, screenshots, console errors.

Uses the shared ``web_driver`` fixture (``tests/support/webbrowser.py``), which skips
with a visible reason where Chromium or chromedriver is missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from newsletter.config import Settings
from newsletter.domain import Match
from newsletter.pipeline.preview import run_preview
from newsletter.render import Renderer
from tests.support.digests import article, match, profile, request, sample_matches, settings

if TYPE_CHECKING:
    from selenium.webdriver.chrome.webdriver import WebDriver
    from sqlalchemy import Engine

pytestmark = pytest.mark.browser


@pytest.fixture
def driver(web_driver: WebDriver) -> Iterator[WebDriver]:
    """The session's browser, restored after a test changed its size or colour scheme."""
    web_driver.get_log("browser")  # drop what earlier tests left
    yield web_driver
    web_driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    web_driver.set_window_size(1000, 800)


def _write_digest(tmp_path: Path) -> Path:
    r = Renderer(settings(unsubscribe_mailto="unsubscribe@example.org"))
    email = r.render(
        request(
            profile(),
            sample_matches(5),
            preferences_url="https://news.example.org/preferences/tok123",
        )
    )
    assert email is not None
    path = tmp_path / "digest.html"
    path.write_text(email.html, encoding="utf-8")
    return path


def _full_page(driver: WebDriver, path: Path, width: int) -> None:
    driver.set_window_size(width, 900)
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(width, min(height + 140, 6000))
    driver.save_screenshot(str(path))


def _severe(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e.get("level") == "SEVERE"]


def test_digest_renders_cards_and_highlights(
    driver: WebDriver, tmp_path: Path, screenshot_dir: Path
) -> None:
    page = _write_digest(tmp_path)
    driver.get(page.as_uri())
    assert driver.title.startswith("Your entries for Sun 22 Nov")
    cards = driver.find_elements("css selector", "table.card")
    assert len(cards) == 5
    assert all(c.is_displayed() for c in cards)
    marks = driver.find_elements("css selector", "mark")
    assert marks and all(m.is_displayed() for m in marks)
    assert {m.text for m in marks} >= {"Reward", "RLHF", "reward"}
    background = driver.execute_script(
        "return getComputedStyle(document.querySelector('mark')).backgroundColor"
    )
    assert background == "rgb(253, 230, 138)"  # inlined style, no stylesheet needed
    # The preheader is in the DOM for inbox previews but invisible.
    assert not driver.find_element("css selector", ".preheader").is_displayed()
    unsubscribe = driver.find_element("link text", "Unsubscribe")
    assert unsubscribe.get_attribute("href") == "https://news.example.org/unsubscribe/tok123"
    assert unsubscribe.is_displayed()
    _full_page(driver, screenshot_dir / "digest-desktop.png", 1000)
    assert (screenshot_dir / "digest-desktop.png").stat().st_size > 10_000
    assert _severe(driver.get_log("browser")) == []


def test_digest_on_a_phone_and_in_dark_mode(
    driver: WebDriver, tmp_path: Path, screenshot_dir: Path
) -> None:
    page = _write_digest(tmp_path)
    driver.get(page.as_uri())
    driver.set_window_size(390, 844)
    overflow = driver.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0  # no sideways scrolling on a phone
    _full_page(driver, screenshot_dir / "digest-phone.png", 390)

    driver.execute_cdp_cmd(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": "dark"}]},
    )
    card_bg = driver.execute_script(
        "return getComputedStyle(document.querySelector('table.card')).backgroundColor"
    )
    title = driver.execute_script(
        "return getComputedStyle(document.querySelector('.title-link')).color"
    )
    assert card_bg == "rgb(23, 27, 36)"  # the @media override beats the inline style
    assert title == "rgb(243, 244, 246)"
    _full_page(driver, screenshot_dir / "digest-dark.png", 1000)
    assert _severe(driver.get_log("browser")) == []


def test_preview_index_links_to_each_digest(
    driver: WebDriver,
    preview_world: tuple[Settings, Engine],
    screenshot_dir: Path,
) -> None:
    settings, engine = preview_world
    result = run_preview(engine, settings, now=datetime(2026, 11, 22, 9, 30, tzinfo=UTC))
    driver.get(result.index.as_uri())
    rows = driver.find_elements("css selector", "tr.row")
    assert len(rows) == len(result.rows) == 4
    driver.save_screenshot(str(screenshot_dir / "preview-index.png"))
    driver.find_element("link text", "HTML").click()  # the first subscriber with an email
    assert driver.current_url.endswith("/2026-11-22/ada@example.org.html")
    assert len(driver.find_elements("css selector", "table.card")) >= 3
    assert driver.find_elements("css selector", "mark")
    _full_page(driver, screenshot_dir / "preview-ada.png", 1000)
    assert _severe(driver.get_log("browser")) == []


def test_preview_index_reads_on_a_phone(
    driver: WebDriver,
    preview_world: tuple[Settings, Engine],
    screenshot_dir: Path,
) -> None:
    """At 390 px nothing is pushed off-screen and a subject wraps into a few lines, not
    one word per line (each row becomes a block: who and day, then the subject, then
    the numbers and links)."""
    settings, engine = preview_world
    result = run_preview(engine, settings, now=datetime(2026, 11, 22, 9, 30, tzinfo=UTC))
    driver.set_window_size(390, 900)
    driver.get(result.index.as_uri())
    width = int(driver.execute_script("return window.innerWidth"))
    assert width <= 390
    assert int(driver.execute_script("return document.documentElement.scrollWidth")) <= width
    subjects = driver.find_elements("css selector", "tr.row td.subject a")
    assert subjects
    for subject in subjects:
        box = driver.execute_script(
            "const r = arguments[0].getBoundingClientRect();"
            "const lh = parseFloat(getComputedStyle(arguments[0]).lineHeight);"
            "return [r.left, r.right, r.height, lh, arguments[0].textContent.split(' ').length];",
            subject,
        )
        left, right, height, line, n_words = box
        assert left >= 0 and right <= width
        assert height <= 4 * line + 1, (subject.text, height, line)
        assert height < n_words * line  # not one word per line
    # Every cell, link and number, is on screen.
    rights = driver.execute_script(
        "return [...document.querySelectorAll('td, td a')]"
        ".map(e => e.getBoundingClientRect().right)"
    )
    assert max(rights) <= width
    _full_page(driver, screenshot_dir / "preview-index-phone.png", 390)
    assert (screenshot_dir / "preview-index-phone.png").stat().st_size > 5_000
    assert _severe(driver.get_log("browser")) == []


def test_a_trending_card_with_authors_badge_and_paper_links(
    driver: WebDriver, tmp_path: Path, screenshot_dir: Path
) -> None:
    paper = "https://huggingface.co/papers/2611.04242"
    links = {
        "Paper page": paper,
        "arXiv": "https://arxiv.org/abs/2611.04242",
        "PDF": "https://arxiv.org/pdf/2611.04242",
    }
    hf = replace(
        article(
            "Sparse Token Routing Makes Mixture-of-Experts Cheap to Serve",
            "We route each token to two experts chosen by a learned hash.",
            link=paper,
            authors=["Mira Okafor", "Jonas Weber", "Lina Haddad", "Kenji Sato"],
            upvotes=57,
        ),
        paper_url=links["Paper page"],
        abs_url=links["arXiv"],
        pdf_url=links["PDF"],
        comments=12,
    )
    keyword = match(article(authors=["Ada Lovelace", "Alan Turing"]), "RLHF")
    email = Renderer(settings()).render(
        request(
            profile(keywords=["RLHF"], trending=1), [keyword, Match(hf, 0.0, (), trending=True)]
        )
    )
    assert email is not None
    page = tmp_path / "trending.html"
    page.write_text(email.html, encoding="utf-8")
    driver.get(page.as_uri())
    cards = driver.find_elements("css selector", "table.card")
    assert len(cards) == 2
    assert cards[0].find_elements("css selector", ".badge") == []
    badge = cards[1].find_element("css selector", ".badge")
    assert badge.is_displayed() and badge.text.lower() == "trending"
    assert badge.value_of_css_property("background-color") == "rgba(255, 237, 213, 1)"
    bylines = [c.find_element("css selector", ".byline").text for c in cards]
    assert bylines == ["Ada Lovelace, Alan Turing", "Mira Okafor, Jonas Weber, Lina Haddad et al."]
    shown = {
        a.text: a.get_attribute("href")
        for a in cards[1].find_elements("css selector", "a.paper-link")
    }
    assert shown == links and all(
        a.is_displayed() for a in cards[1].find_elements("css selector", "a.paper-link")
    )
    assert "trending, 57 upvotes" in cards[1].find_element("css selector", ".why").text
    comments = cards[1].find_element("css selector", ".meta .comments")
    assert comments.is_displayed() and comments.text == "12 comments"
    assert cards[0].find_elements("css selector", ".comments") == []
    _full_page(driver, screenshot_dir / "digest-trending.png", 1000)
    assert (screenshot_dir / "digest-trending.png").stat().st_size > 10_000
    driver.set_window_size(390, 844)
    overflow = driver.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0  # the badge and the links wrap on a phone
    _full_page(driver, screenshot_dir / "digest-trending-phone.png", 390)
    assert _severe(driver.get_log("browser")) == []
