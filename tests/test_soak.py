"""The soak test's short version: a few simulated days of faults, kills, concurrent
sends and settling, against the real CLI, on SQLite and PostgreSQL. ``make soak`` runs
the month (see ``tests/soak/month.py``)."""

from __future__ import annotations

from pathlib import Path

from tests.soak.month import run_month


def test_a_few_days_of_faults_lose_nothing_and_send_nothing_twice(
    db_url: str, tmp_path: Path
) -> None:
    report = run_month(tmp_path, db_url, seed=7, days=3, subscribers=10)
    assert report.ok, report.line() + "\n" + "\n".join(report.details[:20] + report.tracebacks[:3])
    # The run exercised what it is for, not an empty month.
    assert report.expected > 20 and report.messages >= 10
    assert report.kills + report.faults + report.smtp_down_runs > 0
