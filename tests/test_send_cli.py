"""``newsletter send``, ``resend``, ``run --once`` and the outbox part of ``status``,
through click (``obj`` unset: the group builds its own context) and as a subprocess."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email import policy as email_policy
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, text, update

from newsletter.cli import cli
from newsletter.db import session_scope
from newsletter.models import Entry
from tests.support.sending import SECRET, add_subscribers, cli_env, digests, write_config
from tests.support.smtp import Fault, SmtpTestServer

ROOT = Path(__file__).resolve().parent.parent


def invoke(cfg: Path, *args: str) -> Result:
    return CliRunner().invoke(
        cli, ["--config", str(cfg), *args], env={"NEWSLETTER_SECRET_KEY": SECRET}
    )


@pytest.fixture
def sample(engine: Engine, db_url: str, tmp_path: Path) -> Path:
    """The bundled sample feeds fetched into the database, seen an hour ago, and three
    subscribers: two with matching keywords, one without."""
    shutil.copytree(ROOT / "examples" / "feeds", tmp_path / "feeds")
    cfg = write_config(tmp_path, db_url)
    with cfg.open("a") as f:
        for i in range(3):
            f.write(f'[[feeds]]\nname = "sample-{i}"\nurl = "feeds/daily-papers-00{i}.atom"\n')
    assert invoke(cfg, "fetch").exit_code == 0
    with session_scope(engine) as s:
        s.execute(update(Entry).values(first_seen_at=datetime.now(UTC) - timedelta(hours=1)))
    add_subscribers(engine, ["ada@example.org"], keywords=["bilevel optimization"])
    add_subscribers(engine, ["grace@example.org"], keywords=["preference optimization", "RLHF"])
    add_subscribers(engine, ["nobody@example.org"], keywords=["zymurgy"])
    return cfg


def test_dry_run_then_send_then_status(sample: Path, engine: Engine, tmp_path: Path) -> None:
    dry = invoke(sample, "send", "--now", "--dry-run")
    assert dry.exit_code == 0, dry.output
    lines = dry.stdout.splitlines()
    assert lines[0].startswith("send  ada@example.org  [") and " entries, " in lines[0]
    assert lines[1].startswith("send  grace@example.org  [")
    assert lines[2].startswith("skip  nobody@example.org  [") and "nothing new" in lines[2]
    assert lines[-1] == "dry run: would send 2, skip 1 (nothing new); nothing changed"
    assert digests(engine) == []

    sent = invoke(sample, "send", "--now")
    assert sent.exit_code == 0, sent.output
    assert sent.stdout.splitlines()[0] == "sent 2, skipped 1 (nothing new), failed 0, retried 0"
    emls = sorted((tmp_path / "outbox" / "sent").rglob("*.eml"))
    assert [p.name.split("-")[0] for p in emls] == ["ada@example.org", "grace@example.org"]
    msg = message_from_bytes(emls[0].read_bytes(), policy=email_policy.default)
    assert msg["To"].addresses[0].addr_spec == "ada@example.org"
    assert "Bilevel" in msg.get_body(("plain",)).get_content()

    again = invoke(sample, "send", "--now")
    assert again.stdout.splitlines()[0] == "sent 0, skipped 0 (nothing new), failed 0, retried 0"

    status = invoke(sample, "status")
    assert status.exit_code == 0, status.output
    assert "Outbox: 0 pending, 0 sending, 2 sent, 0 failed, 1 skipped (delivery: preview)" in (
        status.stdout
    )
    assert ", ok: sent 0, skipped 0, failed 0, retried 0" in status.stdout
    data = json.loads(invoke(sample, "status", "--json").stdout)
    assert data["outbox"]["counts"]["sent"] == 2
    assert data["outbox"]["last_send"]["status"] == "ok"
    assert data["outbox"]["sending"] == [] and data["outbox"]["failures"] == []


def test_failures_exit_1_and_show_in_status_and_resend(
    sample: Path, db_url: str, engine: Engine, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    cfg = write_config(tmp_path, db_url, smtp_server)
    smtp_server.add_fault(
        Fault("RCPT", "550 5.1.1 mailbox unavailable", frozenset({"grace@example.org"}))
    )
    result = invoke(cfg, "send", "--now")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "sent 1, skipped 1 (nothing new), failed 1, retried 0",
        "  failed: grace@example.org: grace@example.org: RCPT TO rejected: "
        "550 5.1.1 mailbox unavailable (SMTP 550)",
    ]
    status = invoke(cfg, "status")
    assert "Failed digests (latest)" in status.stdout and "550 5.1.1" in status.stdout
    listing = invoke(cfg, "resend")
    assert "grace@example.org" in listing.stdout and "failed" in listing.stdout
    failed = next(d for d in digests(engine) if d.status == "failed")
    # The address is fixed; send it again.
    smtp_server.handler.faults.clear()
    settled = invoke(cfg, "resend", str(failed.id), "--send-again")
    assert settled.exit_code == 0 and "is pending again" in settled.stdout
    again = invoke(cfg, "send")
    assert again.exit_code == 0
    assert again.stdout.startswith("sent 1,")
    assert len(smtp_server.received_by("grace@example.org")) == 1


def test_resend_usage(sample: Path) -> None:
    assert invoke(sample, "resend").stdout.startswith("nothing to settle")
    assert invoke(sample, "resend", "7").exit_code == 2  # no --mark-sent/--send-again
    assert invoke(sample, "resend", "--mark-sent").exit_code == 2  # no id
    missing = invoke(sample, "resend", "999", "--mark-sent")
    assert missing.exit_code == 1 and "error: no digest with id 999" in missing.stderr


def test_run_once(sample: Path, engine: Engine) -> None:
    result = invoke(sample, "run", "--once")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("fetched 3 feeds: 0 new")
    # Not forced: only digests whose send time (07:00 UTC) has passed today go out.
    sent_now = datetime.now(UTC).time() >= datetime.strptime("07:00", "%H:%M").time()
    expected = "sent 2, skipped 1" if sent_now else "sent 0, skipped 0"
    assert lines[1].startswith(expected)


def test_unreachable_server_is_one_error_line(
    sample: Path, db_url: str, engine: Engine, tmp_path: Path
) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tmp_path / "down.toml"
    cfg.write_text(
        sample.read_text()
        .replace('delivery = "preview"', 'delivery = "smtp"')
        .replace("batch_size = 5", "batch_size = 5\n[smtp]\nhost = \"127.0.0.1\"\n"
                 f"port = {port}\nmax_attempts = 2\nretry_base_seconds = 0.01\n")
    )  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "newsletter", "--config", str(cfg), "send", "--now"],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1].startswith(
        f"error: SMTP server unavailable: connecting to 127.0.0.1:{port} failed:"
    )
    assert "Traceback" not in proc.stderr
    # One message for the event: the `error:` line, not also an ERROR log line.
    assert proc.stderr.count("SMTP server unavailable") == 1, proc.stderr
    assert " ERROR " not in proc.stderr
    assert "2 digest(s) still pending" in proc.stdout
    assert {d.status for d in digests(engine)} == {"pending", "skipped"}


@pytest.mark.parametrize("command", [("send", "--now"), ("run", "--once")])
def test_smtp_with_the_init_base_url_is_refused(
    sample: Path,
    engine: Engine,
    tmp_path: Path,
    smtp_server: SmtpTestServer,
    command: tuple[str, ...],
) -> None:
    """`delivery = "smtp"` with the development base_url stops before any mail (exit 2);
    the variable NEWSLETTER_ALLOW_INSECURE_BASE_URL (or the TOML key) lets it through."""
    cfg = tmp_path / "smtp.toml"
    cfg.write_text(
        sample.read_text()
        .replace('"https://digest.example.org"', '"http://127.0.0.1:8000"')
        .replace('delivery = "preview"', 'delivery = "smtp"')
        .replace("batch_size = 5", f'batch_size = 5\n[smtp]\nhost = "127.0.0.1"\n'
                 f"port = {smtp_server.port}\n")
    )  # fmt: skip
    refused = invoke(cfg, *command)
    assert refused.exit_code == 2, refused.output
    assert refused.stderr.strip().splitlines() == [
        f"error: {cfg}: newsletter.base_url: SMTP delivery would mail links to "
        "http://127.0.0.1:8000 (a loopback address): set base_url to the public https:// "
        "address of `newsletter serve`, or allow_insecure_base_url = true in [newsletter] "
        "to send anyway"
    ]
    assert smtp_server.messages == [] and digests(engine) == []
    allowed = CliRunner().invoke(
        cli,
        ["--config", str(cfg), "send", "--now"],
        env={"NEWSLETTER_SECRET_KEY": SECRET, "NEWSLETTER_ALLOW_INSECURE_BASE_URL": "1"},
    )
    assert allowed.exit_code == 0, allowed.output
    assert len(smtp_server.messages) == 2


def test_test_send_mails_the_next_digest_elsewhere_and_records_nothing(
    sample: Path, db_url: str, engine: Engine, tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    """`send --subscriber ada --to me`: ada's next digest reaches me through the SMTP
    server, marked as a test; the outbox has no row for it, and ada's real digest then
    carries the same entries, byte for byte in its text part."""
    cfg = write_config(tmp_path, db_url, smtp_server)
    before = len(digests(engine))
    test = invoke(cfg, "send", "--subscriber", "ada@example.org", "--to", "me@example.net")
    assert test.exit_code == 0, test.output
    first = test.stdout.splitlines()[0]
    assert first.startswith("test send: ada@example.org's next digest [")
    assert "sent to me@example.net as '[test] " in first
    assert first.endswith("; nothing recorded in the outbox")
    assert len(digests(engine)) == before == 0
    (got,) = smtp_server.messages
    assert got.rcpt_tos == ("me@example.net",)
    copy = got.message
    assert copy["To"] == "me@example.net" and copy["Subject"].startswith("[test] ")
    assert copy["List-Unsubscribe"] is None and copy["List-Unsubscribe-Post"] is None
    assert "Bilevel" in copy.get_body(("plain",)).get_content()

    real = invoke(cfg, "send", "--now", "--subscriber", "ada@example.org")
    assert real.exit_code == 0, real.output
    assert real.stdout.startswith("sent 1, skipped 0")
    (delivered,) = smtp_server.received_by("ada@example.org")
    msg = delivered.message
    assert "[test] " + str(msg["Subject"]) == copy["Subject"]
    assert msg["Message-ID"] != copy["Message-ID"]  # the real one is stable; resend needs it
    assert msg["List-Unsubscribe"] is not None
    # The same text but for "View in browser": only a sent digest has a kept copy to view.
    text = msg.get_body(("plain",)).get_content()
    view = [line for line in text.splitlines() if line.startswith("View in browser: ")]
    assert len(view) == 1
    assert text.replace(view[0] + "\n", "") == copy.get_body(("plain",)).get_content()
    assert [d.status for d in digests(engine)] == ["sent"]


def test_test_send_needs_one_subscriber(sample: Path) -> None:
    both = invoke(sample, "send", "--to", "me@example.net")
    assert both.exit_code == 2 and "--to needs exactly one --subscriber EMAIL" in both.stderr
    dry = invoke(sample, "send", "--subscriber", "ada@example.org", "--to", "x@y.z", "--dry-run")
    assert dry.exit_code == 2 and "takes no --dry-run or --now" in dry.stderr
    bad = invoke(sample, "send", "--subscriber", "ada@example.org", "--to", "nobody")
    assert bad.exit_code == 1 and "--to: expected an email address" in bad.stderr
    unknown = invoke(sample, "send", "--subscriber", "who@example.org", "--to", "me@example.net")
    assert unknown.exit_code == 1 and "no subscriber who@example.org" in unknown.stderr


def test_unknown_subscriber(sample: Path) -> None:
    result = invoke(sample, "send", "--subscriber", "who@example.org")
    assert result.exit_code == 1
    assert "error: no subscriber who@example.org who can be mailed" in result.stderr


def test_send_composes_on_several_processes_with_the_same_result(
    sample: Path, engine: Engine, tmp_path: Path
) -> None:
    """``compose_workers = 2`` forks composers; the messages are byte-for-byte those of
    composing in-process but for the Date header (preview delivery writes them out)."""
    more = [f"reader{i}@example.org" for i in range(6)]
    add_subscribers(engine, more, keywords=["reinforcement learning", "reward"])
    dry = invoke(sample, "send", "--now", "--dry-run")
    assert dry.exit_code == 0, dry.output

    def run(workers: int) -> dict[str, bytes]:
        result = CliRunner().invoke(
            cli,
            ["--config", str(sample), "send", "--now"],
            env={"NEWSLETTER_SECRET_KEY": SECRET, "NEWSLETTER_COMPOSE_WORKERS": str(workers)},
        )
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith("sent 8, skipped 1")
        out = tmp_path / "outbox" / "sent"
        files = {
            p.name.split("-")[0]: re.sub(rb"\r\nDate: [^\r]*", b"", p.read_bytes())
            for p in out.rglob("*.eml")
        }
        shutil.rmtree(out)
        return files

    parallel = run(2)
    assert len(parallel) == 8
    with session_scope(engine) as s:  # forget the digests, so the same ones go out again
        if engine.dialect.name == "postgresql":  # with the same ids: View in browser names them
            s.execute(text("TRUNCATE digests RESTART IDENTITY CASCADE"))
        else:
            from newsletter.models import Digest, DigestCopy, DigestEntry

            s.query(DigestCopy).delete()
            s.query(DigestEntry).delete()
            s.query(Digest).delete()
    assert run(1) == parallel
