"""The senders against a real SMTP server (aiosmtpd on 127.0.0.1) and a real directory."""

from __future__ import annotations

import random
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest

from newsletter.config import SmtpSettings, settings_from_mapping
from newsletter.delivery import (
    OutgoingMessage,
    PreviewSender,
    SmtpThrottledError,
    SmtpUnavailableError,
    backoff_seconds,
    make_sender,
)
from newsletter.delivery.smtp import SmtpSender, to_crlf
from newsletter.errors import ConfigError, DeliveryError
from tests.support.smtp import Fault, RecordingHandler, SmtpTestServer, start_smtp_server


def message(to: str, *, body: str = "Hello.\n", subject: str = "Digest") -> OutgoingMessage:
    msg = EmailMessage()
    msg["From"] = "Digest <digest@example.org>"
    msg["To"] = to
    msg["Subject"] = subject
    mid = make_msgid(domain="example.org")
    msg["Message-ID"] = mid
    msg.set_content(body)
    return OutgoingMessage(
        envelope_from="digest@example.org", recipient=to, data=msg.as_bytes(), message_id=mid
    )


def smtp(server: SmtpTestServer, **overrides: object) -> SmtpSettings:
    cfg = server.smtp_config(**overrides)
    return settings_from_mapping({"smtp": cfg}).smtp


class FakeClock:
    """A monotonic clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.slept.append(seconds)
            self.now += seconds


def test_sends_and_returns_the_servers_reply(smtp_server: SmtpTestServer) -> None:
    out = message("ada@example.org")
    with SmtpSender(smtp(smtp_server)) as sender:
        receipt = sender.send(out)
    assert receipt.reply.startswith("250 2.0.0 Ok: queued as Q1")
    assert receipt.message_id == out.message_id
    [got] = smtp_server.messages
    assert got.rcpt_tos == ("ada@example.org",)
    assert got.mail_from == "digest@example.org"
    assert got.message["Message-ID"] == out.message_id
    assert got.message.get_content() == "Hello.\n"


def test_one_connection_is_reused_then_renewed(smtp_server: SmtpTestServer) -> None:
    with SmtpSender(smtp(smtp_server, max_per_connection=2)) as sender:
        for i in range(5):
            sender.send(message(f"r{i}@example.org"))
    conns = [m.connection for m in smtp_server.messages]
    assert len(conns) == 5
    assert conns[0] == conns[1] != conns[2] == conns[3] != conns[4]
    assert smtp_server.handler.connections == 3


def test_parallel_connections_each_thread_its_own(smtp_server: SmtpTestServer) -> None:
    sender = SmtpSender(smtp(smtp_server, connections=3))
    assert sender.parallelism == 3
    with sender, ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda i: sender.send(message(f"p{i}@example.org")), range(12)))
    assert len(smtp_server.messages) == 12
    assert smtp_server.handler.connections <= 3


def test_8bitmime_used_when_offered(smtp_server: SmtpTestServer) -> None:
    out = message("ada@example.org", body="Schrödinger’s cat — naïve café.\n")
    assert not out.data.isascii()
    with SmtpSender(smtp(smtp_server)) as sender:
        sender.send(out)
    [got] = smtp_server.messages
    assert "BODY=8BITMIME" in got.mail_options
    assert got.message.get_content() == "Schrödinger’s cat — naïve café.\n"


def test_without_8bitmime_the_body_is_reencoded_7bit() -> None:
    server = start_smtp_server(RecordingHandler(offer_8bitmime=False))
    try:
        out = message("ada@example.org", body="Schrödinger’s cat — naïve café.\n")
        with SmtpSender(smtp(server)) as sender:
            sender.send(out)
        [got] = server.messages
        assert "BODY=8BITMIME" not in got.mail_options
        assert got.data.isascii()
        assert got.message.get_content() == "Schrödinger’s cat — naïve café.\n"
    finally:
        server.controller.stop()


HTTPS = "https://digest.example.org"
_CRLF = b"From: d@example.org\r\nSubject: crlf\r\n\r\nline one\r\nline two\r\n"
_LF = b"From: d@example.org\nSubject: lf\n\nline one\nline two\n"
_MIXED = b"From: d@example.org\r\nSubject: mixed\n\r\nline one\nline two\r\n\n"


def test_to_crlf_fixes_bare_lfs_and_leaves_crlf_messages_alone() -> None:
    assert to_crlf(_CRLF) is _CRLF  # nothing to fix: no copy made
    assert to_crlf(b"no line break") == b"no line break"
    assert to_crlf(_LF) == b"From: d@example.org\r\nSubject: lf\r\n\r\nline one\r\nline two\r\n"
    assert to_crlf(_MIXED) == (
        b"From: d@example.org\r\nSubject: mixed\r\n\r\nline one\r\nline two\r\n\r\n"
    )
    assert to_crlf(b"a\r\r\nb\n\n") == b"a\r\r\nb\r\n\r\n"


@pytest.mark.parametrize("raw", [_CRLF, _LF, _MIXED], ids=["crlf", "bare-lf", "mixed"])
def test_every_line_reaches_the_server_ending_in_crlf(
    smtp_server: SmtpTestServer, raw: bytes
) -> None:
    out = OutgoingMessage(envelope_from="d@example.org", recipient="ada@example.org", data=raw)
    with SmtpSender(smtp(smtp_server)) as sender:
        sender.send(out)
    [got] = smtp_server.messages
    assert got.data == raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def test_permanent_rejection_is_permanent(smtp_server: SmtpTestServer) -> None:
    smtp_server.add_fault(Fault("RCPT", "550 5.1.1 No such user", frozenset({"gone@example.org"})))
    called = []
    with SmtpSender(smtp(smtp_server)) as sender:
        with pytest.raises(DeliveryError) as info:
            sender.send(message("gone@example.org"), before_data=lambda: called.append(1))
        assert info.value.permanent and info.value.code == 550
        assert "No such user" in str(info.value)
        assert called == []  # rejected before DATA: never marked as sending
        sender.send(message("ok@example.org"))  # the connection is still good
    assert [m.rcpt_tos for m in smtp_server.messages] == [("ok@example.org",)]


@pytest.mark.parametrize("reply", ["451 4.3.0 Local error", "450 4.2.1 Mailbox busy"])
def test_temporary_reply_is_not_permanent(smtp_server: SmtpTestServer, reply: str) -> None:
    smtp_server.add_fault(Fault("DATA", reply, times=1))
    with SmtpSender(smtp(smtp_server)) as sender:
        with pytest.raises(DeliveryError) as info:
            sender.send(message("ada@example.org"))
        assert not info.value.permanent
        assert info.value.code == int(reply[:3])
        assert not isinstance(info.value, SmtpThrottledError)
        sender.send(message("ada@example.org"))
    assert len(smtp_server.messages) == 1


def test_throttling_reply_pauses_every_thread(smtp_server: SmtpTestServer) -> None:
    smtp_server.add_fault(
        Fault("MAIL", "421 4.7.0 Too many messages, rate limit exceeded", times=1)
    )
    clock = FakeClock()
    settings = smtp(smtp_server, retry_base_seconds=4.0, retry_max_seconds=60.0)
    with SmtpSender(settings, clock=clock, sleep=clock.sleep, rng=random.Random(1)) as sender:
        with pytest.raises(SmtpThrottledError) as info:
            sender.send(message("ada@example.org"))
        assert info.value.code == 421 and not info.value.permanent
        sender.send(message("ada@example.org"))
    # The second send waited out the pause (2..4 s for the first strike), then reconnected.
    assert len(clock.slept) == 1 and 2.0 <= clock.slept[0] <= 4.0
    assert len(smtp_server.messages) == 1
    assert smtp_server.handler.connections == 2


def test_dropped_connection_mid_data_is_temporary_and_reconnects(
    smtp_server: SmtpTestServer,
) -> None:
    smtp_server.add_fault(Fault("DATA", "drop", times=1))
    with SmtpSender(smtp(smtp_server)) as sender:
        with pytest.raises(DeliveryError) as info:
            sender.send(message("ada@example.org"))
        assert not info.value.permanent and "connection lost" in str(info.value)
        sender.send(message("ada@example.org"))
    assert len(smtp_server.messages) == 1
    assert smtp_server.handler.connections == 2


def test_stalled_server_times_out(smtp_server: SmtpTestServer) -> None:
    smtp_server.add_fault(Fault("DATA", "stall", times=1))
    with SmtpSender(smtp(smtp_server, timeout_seconds=0.3)) as sender:
        with pytest.raises(DeliveryError) as info:
            sender.send(message("ada@example.org"))
        assert not info.value.permanent and "timed out" in str(info.value)
        sender.send(message("ada@example.org"))
    assert len(smtp_server.messages) == 1


def test_idle_connection_closed_by_server_is_replaced_silently(
    smtp_server: SmtpTestServer,
) -> None:
    with SmtpSender(smtp(smtp_server)) as sender:
        sender.send(message("a@example.org"))
        # The server times the idle client out: its next MAIL gets 421, then a close.
        smtp_server.add_fault(Fault("MAIL", "421 4.4.2 Error: timeout exceeded", times=1))
        sender.send(message("b@example.org"))
    assert [m.rcpt_tos[0] for m in smtp_server.messages] == ["a@example.org", "b@example.org"]
    assert smtp_server.handler.connections == 2


def test_before_data_failure_sends_nothing_and_keeps_connection(
    smtp_server: SmtpTestServer,
) -> None:
    class Lost(Exception):
        pass

    def refuse() -> None:
        raise Lost

    with SmtpSender(smtp(smtp_server)) as sender:
        with pytest.raises(Lost):
            sender.send(message("a@example.org"), before_data=refuse)
        sender.send(message("b@example.org"))
    assert [m.rcpt_tos[0] for m in smtp_server.messages] == ["b@example.org"]
    assert smtp_server.handler.connections == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_connection_refused_means_unavailable() -> None:
    settings = settings_from_mapping(
        {"smtp": {"host": "127.0.0.1", "port": _free_port(), "timeout_seconds": 2.0}}
    ).smtp
    with SmtpSender(settings) as sender, pytest.raises(SmtpUnavailableError) as info:
        sender.send(message("a@example.org"))
    assert not info.value.permanent
    assert "connecting to 127.0.0.1" in str(info.value)


def test_greeting_refused_means_unavailable(smtp_server: SmtpTestServer) -> None:
    smtp_server.add_fault(Fault("EHLO", "421 4.3.2 Service not available"))
    with SmtpSender(smtp(smtp_server)) as sender, pytest.raises(SmtpUnavailableError):
        sender.send(message("a@example.org"))
    assert smtp_server.messages == []


def test_max_per_second_spaces_messages(smtp_server: SmtpTestServer) -> None:
    clock = FakeClock()
    with SmtpSender(smtp(smtp_server, max_per_second=10.0), clock=clock, sleep=clock.sleep) as s:
        for i in range(5):
            s.send(message(f"r{i}@example.org"))
    assert len(smtp_server.messages) == 5
    assert sum(clock.slept) == pytest.approx(0.4)


@pytest.fixture
def tls_files(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed (needed to make a test certificate)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    yield cert, key


def test_starttls_verifies_the_certificate_by_default(tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    server = start_smtp_server(tls_context=ctx)
    try:
        with SmtpSender(smtp(server, starttls=True)) as sender:
            with pytest.raises(SmtpUnavailableError) as info:
                sender.send(message("a@example.org"))
            assert info.value.permanent and "certificate" in str(info.value)
        with SmtpSender(smtp(server, starttls=True, verify_tls=False)) as sender:
            sender.send(message("a@example.org"))
        assert len(server.messages) == 1
    finally:
        server.controller.stop()


def test_preview_sender_writes_eml_atomically(tmp_path: Path) -> None:
    out = message("ada@example.org")
    out = OutgoingMessage(
        out.envelope_from, out.recipient, out.data, out.message_id, digest_id=7, period="2026-03-29"
    )
    order: list[str] = []
    sender = PreviewSender(tmp_path / "outbox")
    path = sender.path_for(out)

    def before() -> None:
        order.append("before")
        assert not path.exists()

    receipt = sender.send(out, before_data=before)
    assert order == ["before"]
    assert path == tmp_path / "outbox" / "sent" / "2026-03-29" / "ada@example.org-7.eml"
    assert path.read_bytes() == out.data
    assert str(path) in receipt.reply
    assert list(path.parent.iterdir()) == [path]  # no temp file left behind


def test_make_sender_follows_the_delivery_setting(tmp_path: Path) -> None:
    preview = settings_from_mapping({}, base_dir=tmp_path)
    assert isinstance(make_sender(preview), PreviewSender)
    smtp_cfg = settings_from_mapping(
        {"newsletter": {"delivery": "smtp", "base_url": HTTPS}, "smtp": {"connections": 3}},
        base_dir=tmp_path,
    )
    sender = make_sender(smtp_cfg)
    assert isinstance(sender, SmtpSender) and sender.parallelism == 3
    with_password = settings_from_mapping(
        {
            "newsletter": {"delivery": "smtp", "base_url": HTTPS},
            "smtp": {"username": "u", "password_env": "PW_X"},
        },
        base_dir=tmp_path,
    )
    with pytest.raises(ConfigError, match="PW_X"):
        make_sender(with_password, env={})
    authed = make_sender(with_password, env={"PW_X": "secret"})
    assert isinstance(authed, SmtpSender) and authed.password == "secret"


@pytest.mark.parametrize(
    "base_url, reason",
    [
        ("http://127.0.0.1:8000", "a loopback address"),
        ("https://127.3.4.5/digest", "a loopback address"),
        ("https://[::1]:8443", "a loopback address"),
        ("https://localhost", "a loopback address"),
        ("http://digest.example.org", "not HTTPS"),
    ],
)
def test_smtp_refuses_a_base_url_recipients_cannot_use(
    tmp_path: Path, base_url: str, reason: str
) -> None:
    data = {"newsletter": {"delivery": "smtp", "base_url": base_url}}
    with pytest.raises(ConfigError) as err:
        make_sender(settings_from_mapping(data, base_dir=tmp_path))
    assert err.value.exit_code == 2 and err.value.key == "newsletter.base_url"
    assert f"links to {base_url} ({reason})" in str(err.value)
    assert "allow_insecure_base_url = true" in str(err.value) and "\n" not in str(err.value)
    data["newsletter"]["allow_insecure_base_url"] = True  # type: ignore[index]
    assert isinstance(make_sender(settings_from_mapping(data, base_dir=tmp_path)), SmtpSender)
    # Preview mode writes files for the operator: any base_url is fine there.
    preview = {"newsletter": {"base_url": base_url}}
    assert isinstance(make_sender(settings_from_mapping(preview, base_dir=tmp_path)), PreviewSender)


def test_backoff_grows_exponentially_with_bounded_jitter() -> None:
    rng = random.Random(3)
    for attempt, ceiling in [(1, 2.0), (2, 4.0), (3, 8.0), (4, 16.0), (9, 60.0)]:
        for _ in range(50):
            d = backoff_seconds(attempt, 2.0, 60.0, rng)
            assert ceiling / 2 <= d <= ceiling
