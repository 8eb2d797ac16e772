"""Headless Chromium driven by Selenium, from Debian's packages (nothing downloaded).

Skips with a visible reason where ``/usr/bin/chromium`` or ``/usr/bin/chromedriver``
is missing (``NEWSLETTER_TEST_CHROMIUM`` / ``NEWSLETTER_TEST_CHROMEDRIVER`` override
the paths). Screenshots go to the test's tmp dir, or to ``NEWSLETTER_TEST_SCREENSHOTS``
when set, so a person can look at them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from selenium.webdriver.chrome.webdriver import WebDriver

CHROMIUM = Path(os.environ.get("NEWSLETTER_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("NEWSLETTER_TEST_CHROMEDRIVER", "/usr/bin/chromedriver"))
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1000,800",
)


@pytest.fixture(scope="session")
def web_driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """One Chromium for the session, with a fresh profile; its console log is kept."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.skip(f"headless Chromium not available: {', '.join(missing)} missing")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def screenshot_dir(tmp_path: Path) -> Iterator[Path]:
    """Where a test saves its screenshots; copied to NEWSLETTER_TEST_SCREENSHOTS if set."""
    out = tmp_path / "screenshots"
    out.mkdir()
    yield out
    keep = os.environ.get("NEWSLETTER_TEST_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for shot in out.iterdir():
            shutil.copy2(shot, Path(keep) / shot.name)
