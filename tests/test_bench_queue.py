"""The queue benchmarks run end to end on a tiny workload, and say why when they cannot.

No timing is asserted (figures live in ``make bench``): this proves that the queue mode
sends the whole workload every way it measures — every digest settled, the SMTP sink
received exactly what the outbox says was sent — that its rates are computed from
those counts, and that without PostgreSQL it skips with the reason instead of failing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.queue import POSTGRES_URL_ENV, free_port

ROOT = Path(__file__).resolve().parent.parent


def _bench(module: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _env(pg: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env["BENCH_POSTGRES_URL"] = pg
    return env


@pytest.fixture
def pg_base() -> str:
    url = os.environ.get(POSTGRES_URL_ENV, "")
    if not url:
        pytest.skip(f"{POSTGRES_URL_ENV} is not set: the queue benchmark needs PostgreSQL")
    return url


def test_queue_mode_sends_everything_and_reports_rates_from_the_counts(
    pg_base: str, tmp_path: Path
) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    out = tmp_path / "queue.json"
    args = ["--n", "30", "--entries", "40", "--batch", "10", "--empty", "3", "--out", str(out)]
    done = _bench("benchmarks.queue", *args, env=_env(pg_base))
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text(encoding="utf-8"))
    rows = {r["mode"]: r for r in report["rows"]}
    assert list(rows) == ["local send", "in-process tasks", "1 worker", "2 workers"]
    for mode, r in rows.items():
        assert r["not_settled"] == 0, mode
        assert r["sent"] + r["skipped"] == 30 and r["sent"] > 0, mode
        assert r["sink_received"] == r["sent"], mode  # nothing lost, nothing twice
        assert r["messages_per_second"] == round(r["sent"] / r["seconds"], 1) > 0, mode
    for mode in ("in-process tasks", "1 worker", "2 workers"):
        assert rows[mode]["batches"] == 3, mode  # 30 digests, 10 per task
        assert rows[mode]["task_ms"] > 0, mode
    assert "broker_ms_per_batch" in rows["1 worker"] and "broker_ms_per_batch" in rows["2 workers"]
    assert rows["2 workers"]["workers_seen"] >= 1
    assert [r["workers"] for r in report["empty"]] == [0, 1, 2]
    assert all(r["batches"] == 3 and r["ms_per_task"] > 0 for r in report["empty"])
    assert "| 2 workers | " in done.stdout and "queue ms/batch" in done.stdout


def test_outbox_benchmark_takes_every_digest_through_the_three_transitions(
    pg_base: str, tmp_path: Path
) -> None:
    out = tmp_path / "outbox.json"
    args = ["--n", "40", "--processes", "1,2", "--batch", "15", "--out", str(out)]
    done = _bench("benchmarks.outbox_pg", *args, env=_env(pg_base))
    assert done.returncode == 0, done.stdout + done.stderr
    rows = json.loads(out.read_text(encoding="utf-8"))["rows"]
    assert [r["processes"] for r in rows] == [1, 2]
    for r in rows:
        assert r["digests"] == 40
        # From the counts (the seconds are rounded to the millisecond in the report).
        assert r["digests_per_second"] == pytest.approx(40 / r["seconds"], rel=0.01)
        assert r["transitions_per_second"] == pytest.approx(3 * r["digests_per_second"], rel=0.01)
        assert r["transactions"] >= 3  # at least one claim per batch of 15
    assert "| transitions/s |" in done.stdout


@pytest.mark.parametrize("module", ["benchmarks.queue", "benchmarks.outbox_pg"])
def test_without_postgresql_the_benchmark_says_why_and_exits_0(module: str) -> None:
    closed = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing"
    done = _bench(module, "--n", "5", env=_env(closed))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "skipped: no PostgreSQL at postgresql+psycopg://postgres@127.0.0.1:" in done.stdout
    assert "Traceback" not in done.stderr
