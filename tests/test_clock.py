"""The one clock, and its documented override for simulations (``NEWSLETTER_NOW``)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from newsletter import clock
from newsletter.errors import ConfigError


def test_the_real_clock_without_the_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(clock.ENV, raising=False)
    before = datetime.now(UTC)
    got = clock.now()
    assert before <= got <= datetime.now(UTC) and got.tzinfo is not None
    assert clock.simulated() is None


def test_the_override_starts_there_and_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(clock.ENV, "2026-03-02T07:00:00Z")
    first = clock.now()
    time.sleep(0.05)
    second = clock.now()
    start = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
    assert start <= first < second < start + timedelta(minutes=1)
    assert clock.simulated() == "2026-03-02T07:00:00Z"


@pytest.mark.parametrize("raw", ["yesterday", "2026-03-02T07:00:00"])
def test_an_unreadable_override_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    monkeypatch.setenv(clock.ENV, raw)
    with pytest.raises(ConfigError, match="NEWSLETTER_NOW"):
        clock.check()


def _cli(tmp_path: Path, *args: str, now: str | None) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "newsletter.toml"
    cfg.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "n.db"}"\n')
    env = {"PATH": "/usr/bin:/bin", "NEWSLETTER_SECRET_KEY": "k" * 40}
    if now is not None:
        env[clock.ENV] = now
    return subprocess.run(
        [sys.executable, "-m", "newsletter", "--config", str(cfg), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )


def test_status_and_logs_say_loudly_when_the_clock_is_simulated(tmp_path: Path) -> None:
    assert _cli(tmp_path, "db", "upgrade", now=None).returncode == 0
    shown = _cli(tmp_path, "status", now="2027-01-04T06:30:00+00:00")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[0].startswith("SIMULATED CLOCK: NEWSLETTER_NOW=2027-01-04")
    assert "the clock is simulated" in shown.stderr
    data = json.loads(_cli(tmp_path, "status", "--json", now="2027-01-04T06:30:00Z").stdout)
    assert data["clock"]["simulated"] == "2027-01-04T06:30:00Z"
    assert data["clock"]["now"].startswith("2027-01-04T06:30")
    real = _cli(tmp_path, "status", now=None)
    assert "SIMULATED" not in real.stdout and "simulated" not in real.stderr
    bad = _cli(tmp_path, "status", now="tomorrow")
    assert bad.returncode == 2 and "NEWSLETTER_NOW" in bad.stderr
