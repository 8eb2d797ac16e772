"""Real ``newsletter send`` processes against a real SMTP server: killed with SIGKILL
part-way, and two at once on one database. Every digest goes out exactly once."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine

from tests.support.sending import add_entries, add_subscribers, cli_env, digests, write_config
from tests.support.smtp import SmtpTestServer


def newsletter(cfg: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "newsletter", "--config", str(cfg), *args],
        cwd=cfg.parent,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def seed(engine: Engine, n: int) -> list[str]:
    emails = [f"reader{i:02d}@example.org" for i in range(n)]
    add_subscribers(engine, emails, keywords=["optimization"])
    add_entries(
        engine,
        ["Bilevel optimization at scale", "Preference optimization for LLMs", "Unrelated"],
        first_seen=datetime.now(UTC) - timedelta(hours=1),
    )
    return emails


def test_killed_mid_run_then_restarted_sends_each_digest_once(
    engine: Engine, db_url: str, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    emails = seed(engine, 12)
    cfg = write_config(tmp_path, db_url, smtp_server)
    smtp_server.handler.delay = 0.5  # each message takes a while: room to kill mid-way
    proc = newsletter(cfg, "send", "--now")
    try:
        # Four accepted, and the server in the middle of accepting the fifth: the
        # worst moment, when the fifth is already recorded as `sending`.
        assert smtp_server.handler.wait_for(4, timeout=60), "the sender never got going"
        assert smtp_server.handler.wait_for_data(5, timeout=60)
    finally:
        proc.kill()  # SIGKILL: no cleanup of any kind
        proc.wait(30)
    assert proc.returncode == -9
    killed_at = len(smtp_server.messages)
    assert 4 <= killed_at < 12
    assert [d.status for d in digests(engine)].count("sending") == 1

    smtp_server.handler.delay = 0.0
    code, out, err = finish(newsletter(cfg, "send", "--now"))
    assert code == 0, err
    assert "failed 0" in out

    rows = digests(engine)
    sending = [d for d in rows if d.status == "sending"]
    assert len(sending) <= 1  # at most the message the server was accepting
    assert {d.status for d in rows} <= {"sent", "sending"}
    counts = smtp_server.per_recipient()
    ambiguous = {d.subscriber_id for d in sending}
    for sid, email in enumerate(emails, start=1):
        if sid in ambiguous:
            assert counts[email] in (0, 1)
        else:
            assert counts[email] == 1, (email, counts)

    if sending:
        [d] = sending
        code, out, _ = finish(newsletter(cfg, "status"))
        assert code == 0
        assert f"newsletter resend {d.id} --mark-sent | --send-again" in out
        code, out, _ = finish(newsletter(cfg, "resend"))
        assert str(d.id) in out and "sending" in out
        # The operator checks the server: settle accordingly.
        email = emails[d.subscriber_id - 1]
        action = "--mark-sent" if counts[email] else "--send-again"
        code, out, err = finish(newsletter(cfg, "resend", str(d.id), action))
        assert code == 0, err
        code, out, err = finish(newsletter(cfg, "send", "--now"))
        assert code == 0, err
    assert smtp_server.per_recipient() == Counter(dict.fromkeys(emails, 1))
    assert {d.status for d in digests(engine)} == {"sent"}


def test_two_concurrent_senders_deliver_each_digest_once(
    engine: Engine, db_url: str, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    emails = seed(engine, 24)
    cfg = write_config(tmp_path, db_url, smtp_server, connections=2)
    smtp_server.handler.delay = 0.02
    first = newsletter(cfg, "send", "--now")
    second = newsletter(cfg, "send", "--now")
    results = [finish(first), finish(second)]
    for code, _, err in results:
        assert code == 0, err
    assert smtp_server.per_recipient() == Counter(dict.fromkeys(emails, 1))
    assert len(smtp_server.messages) == 24
    assert {d.status for d in digests(engine)} == {"sent"}
    sent = [int(out.split("sent ")[1].split(",")[0]) for _, out, _ in results]
    assert sum(sent) == 24
