"""Structured logs (``--log-format json``): one JSON object per line, the ids a line is
about, addresses and tokens never in clear below WARNING, the recipient named at
WARNING and ERROR where the operator must act."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, update

from newsletter.cli import cli
from newsletter.config import settings_from_mapping
from newsletter.db import session_scope
from newsletter.models import Entry
from newsletter.pipeline.fetch import fetch_feeds
from newsletter.pipeline.logs import JsonFormatter, log_context, mask_addresses
from tests.support.sending import SECRET, add_subscribers, cli_env, write_config
from tests.support.smtp import Fault, SmtpTestServer

ROOT = Path(__file__).resolve().parent.parent
ADA, GRACE, ALAN = "ada@example.org", "grace@example.org", "alan@example.org"


def json_lines(stderr: str) -> list[dict[str, Any]]:
    lines = [line for line in stderr.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one object
    for r in records:
        assert {"time", "level", "logger", "message"} <= set(r), r
        datetime.fromisoformat(r["time"])
    return records


@pytest.fixture
def world(engine: Engine, db_url: str, tmp_path: Path, smtp_server: SmtpTestServer) -> Path:
    """The sample feeds fetched an hour ago; three subscribers who all get a digest: ada
    delivered, grace refused for a while (451), alan refused for good (550)."""
    shutil.copytree(ROOT / "examples" / "feeds", tmp_path / "feeds")
    cfg = write_config(tmp_path, db_url, smtp_server, max_attempts=2)
    with cfg.open("a") as f:
        f.write('[[feeds]]\nname = "sample"\nurl = "feeds/daily-papers-000.atom"\n')
    env = cli_env()
    base = [sys.executable, "-m", "newsletter", "--config", str(cfg)]
    subprocess.run([*base, "fetch"], env=env, check=True, capture_output=True)
    with session_scope(engine) as s:
        s.execute(update(Entry).values(first_seen_at=datetime.now(UTC) - timedelta(hours=1)))
    # Due at any hour of the day the test runs (the default 07:00 is not due before then).
    add_subscribers(engine, [ADA, GRACE, ALAN], keywords=["optimization"], send_time="00:00")
    smtp_server.add_fault(Fault("RCPT", "451 4.7.1 Try again later", frozenset({GRACE})))
    smtp_server.add_fault(Fault("RCPT", "550 5.1.1 No such user", frozenset({ALAN})))
    return cfg


def test_a_runs_json_logs_hide_addresses_and_tokens_at_info(
    world: Path, smtp_server: SmtpTestServer
) -> None:
    args = ["--log-format", "json", "--config", str(world), "run", "--once"]
    done = subprocess.run(
        [sys.executable, "-m", "newsletter", *args],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr  # two digests failed
    records = json_lines(done.stderr)
    [delivered] = smtp_server.messages
    unsubscribe = delivered.message["List-Unsubscribe"]
    tokens = re.findall(r"/unsubscribe/([^>\s]+)", unsubscribe)
    assert tokens and all(len(t) > 20 for t in tokens)
    secrets = [ADA, GRACE, ALAN, SECRET, *tokens]
    info = [r for r in records if r["level"] in ("DEBUG", "INFO")]
    for r in info:
        text = json.dumps(r)
        assert not [s for s in secrets if s in text], r
    problems = [r for r in records if r["level"] in ("WARNING", "ERROR")]
    retry = [r for r in problems if r["level"] == "WARNING" and GRACE in r["message"]]
    gave_up = [r for r in problems if r["level"] == "ERROR" and GRACE in r["message"]]
    refused = [r for r in problems if r["level"] == "ERROR" and ALAN in r["message"]]
    assert len(retry) == 1 and len(gave_up) == 1 and len(refused) == 1, problems
    for r in (*retry, *gave_up, *refused):
        assert isinstance(r["run_id"], int) and r["digest_id"] and r["subscriber_id"], r
    assert retry[0]["digest_id"] == gave_up[0]["digest_id"] != refused[0]["digest_id"]
    assert not any(ADA in json.dumps(r) for r in records)  # delivered: nothing to act on


def test_the_default_format_is_unchanged(world: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "newsletter", "--config", str(world), "run", "--once"],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    line = next(x for x in done.stderr.splitlines() if ALAN in x)
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ERROR newsletter\.pipeline\.", line)
    assert not done.stderr.lstrip().startswith("{")


@pytest.fixture
def json_records() -> Iterator[list[str]]:
    """Lines formatted by JsonFormatter from the ``newsletter`` loggers, in process."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Keep()
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("newsletter")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


def test_a_feed_line_carries_the_feed_and_the_run(
    sqlite_engine: Engine, tmp_path: Path, json_records: list[str]
) -> None:
    settings = settings_from_mapping(
        {"feeds": [{"name": "missing", "url": str(tmp_path / "nope.atom")}]}, base_dir=tmp_path
    )
    report = fetch_feeds(sqlite_engine, settings)
    [line] = [json.loads(x) for x in json_records if "missing" in x]
    assert line["level"] == "WARNING"
    assert line["feed"] == "missing" and line["run_id"] == report.run_id


def test_info_masks_an_address_warning_keeps_it(json_records: list[str]) -> None:
    log = logging.getLogger("newsletter.test")
    with log_context(subscriber_id=7):
        log.info("subscriber %s did something", "ada.lovelace@example.org")
        log.warning("digest 3 to %s failed", "ada.lovelace@example.org")
    info, warning = (json.loads(x) for x in json_records)
    assert info["message"] == "subscriber ad**********@example.org did something"
    assert info["subscriber_id"] == 7 and "run_id" not in info
    assert warning["message"] == "digest 3 to ada.lovelace@example.org failed"
    assert mask_addresses("no address here") == "no address here"


def test_log_format_env_is_known_and_checked(tmp_path: Path) -> None:
    cfg = tmp_path / "newsletter.toml"
    cfg.write_text("")
    runner = CliRunner()
    ok = runner.invoke(
        cli, ["--config", str(cfg), "subscribers", "check"], env={"NEWSLETTER_LOG_FORMAT": "json"}
    )
    assert "unknown variable" not in ok.output
    bad = runner.invoke(cli, ["--log-format", "xml", "status"])
    assert bad.exit_code == 2 and "xml" in bad.output
