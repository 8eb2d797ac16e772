"""``-q`` is quiet, and each event is told once (as a user sees it: a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _cli(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    return subprocess.run(
        [sys.executable, "-m", "newsletter", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``newsletter init`` with its sample feeds fetched."""
    folder = tmp_path_factory.mktemp("q") / "digest"
    assert _cli(folder.parent, "init", str(folder)).returncode == 0
    assert _cli(folder, "fetch").returncode == 0
    return folder


def test_quiet_subscribers_sync_prints_nothing(project: Path) -> None:
    loud = _cli(project, "subscribers", "sync", "--dry-run")
    assert loud.returncode == 0, loud.stderr
    # One sample profile in one file: the nouns agree with the counts.
    assert loud.stdout.startswith("1 profile in 1 file: ")
    quiet = _cli(project, "-q", "subscribers", "sync")
    assert quiet.returncode == 0, quiet.stderr
    assert (quiet.stdout, quiet.stderr) == ("", "")


def test_quiet_preview_prints_only_warnings(project: Path) -> None:
    assert _cli(project, "subscribers", "sync").returncode == 0
    loud = _cli(project, "preview")
    assert loud.returncode == 0, loud.stderr
    assert "1 digest written to " in loud.stdout
    quiet = _cli(project, "-q", "preview")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout == ""
    assert all(" WARNING " in line for line in quiet.stderr.splitlines())


def test_a_failing_feed_is_reported_once(project: Path) -> None:
    config = project / "newsletter.toml"
    text = config.read_text(encoding="utf-8")
    config.write_text(
        text + '\n[[feeds]]\nname = "missing"\nurl = "feeds/nope.atom"\n', encoding="utf-8"
    )
    try:
        result = _cli(project, "fetch", "--feed", "missing")
    finally:
        config.write_text(text, encoding="utf-8")
    assert result.returncode == 1
    assert result.stdout.splitlines()[0].split()[:2] == ["missing", "error"]
    assert "total: 1 feed, " in result.stdout
    assert "missing" not in result.stderr and "WARNING" not in result.stderr, result.stderr


def test_run_once_says_each_thing_once(project: Path) -> None:
    result = _cli(project, "run", "--once")
    assert result.returncode == 0, result.stderr
    both = result.stdout + result.stderr
    assert both.count("fetched 3 feeds") + both.count("fetch: 3 feeds") == 1, both
    assert both.count("sent ") == 1, both
    assert both.count("is not set: unsubscribe links use a public development key") == 1
