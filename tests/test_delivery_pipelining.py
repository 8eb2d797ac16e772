"""ESMTP PIPELINING (RFC 2920): MAIL, RCPT and DATA in one write, after the ``sending`` mark.

Checked against two real servers on 127.0.0.1: a scripted one that records every byte
the client writes (and, offering PIPELINING, answers a group only once all of it has
arrived, so a client waiting for each reply would stall), and aiosmtpd advertising
PIPELINING, for refusals and for whole sends. The bytes on the wire are those of the
command-at-a-time exchange; only the order of the mark changes (before MAIL), so every
refusal comes after it and must leave the digest failed or pending, never ``sending``.
The delivery and send tests of ``test_delivery`` and ``test_send`` run again below
against a pipelining server (their ``smtp_server`` is the one here), except the one
saying a refused recipient is never marked: with PIPELINING it is, then failed.
"""

from __future__ import annotations

import smtplib
import socket
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine

from newsletter.config import SmtpSettings, settings_from_mapping
from newsletter.delivery import OutgoingMessage
from newsletter.delivery.pipelining import quoteaddr
from newsletter.delivery.smtp import SmtpSender
from newsletter.errors import DeliveryError
from tests import test_delivery as delivery_tests
from tests import test_send as send_tests
from tests.support.sending import ManualClock, add_entries, add_subscribers, digests
from tests.support.smtp import Fault, RecordingHandler, SmtpTestServer, start_smtp_server
from tests.test_send import DAY0, make_settings, run

# Run again here, against a pipelining server (pytest collects them in this module).
test_sends_and_returns_the_servers_reply = delivery_tests.test_sends_and_returns_the_servers_reply
test_one_connection_is_reused_then_renewed = (
    delivery_tests.test_one_connection_is_reused_then_renewed
)
test_parallel_connections_each_thread_its_own = (
    delivery_tests.test_parallel_connections_each_thread_its_own
)
test_8bitmime_used_when_offered = delivery_tests.test_8bitmime_used_when_offered
test_temporary_reply_is_not_permanent = delivery_tests.test_temporary_reply_is_not_permanent
test_throttling_reply_pauses_every_thread = delivery_tests.test_throttling_reply_pauses_every_thread
test_dropped_connection_mid_data_is_temporary_and_reconnects = (
    delivery_tests.test_dropped_connection_mid_data_is_temporary_and_reconnects
)
test_idle_connection_closed_by_server_is_replaced_silently = (
    delivery_tests.test_idle_connection_closed_by_server_is_replaced_silently
)
test_before_data_failure_sends_nothing_and_keeps_connection = (
    delivery_tests.test_before_data_failure_sends_nothing_and_keeps_connection
)
test_each_subscriber_gets_exactly_one_digest_per_period = (
    send_tests.test_each_subscriber_gets_exactly_one_digest_per_period
)
test_temporary_faults_are_retried_with_backoff = (
    send_tests.test_temporary_faults_are_retried_with_backoff
)
test_a_permanent_failure_does_not_stop_the_others = (
    send_tests.test_a_permanent_failure_does_not_stop_the_others
)
test_attempts_are_bounded = send_tests.test_attempts_are_bounded
test_parallel_connections_deliver_each_digest_once = (
    send_tests.test_parallel_connections_deliver_each_digest_once
)


@pytest.fixture
def smtp_server() -> Iterator[SmtpTestServer]:
    """The imported tests' server, here advertising PIPELINING."""
    server = start_smtp_server(RecordingHandler(offer_pipelining=True))
    try:
        yield server
    finally:
        server.controller.stop()


# -- a scripted server that records the raw bytes ---------------------------------------


class RawServer:
    """SMTP on 127.0.0.1, scripted: ``replies`` maps a verb (MAIL, RCPT, DATA, END for
    the end of the content) to the reply line; ``wire`` is every byte clients wrote."""

    def __init__(self, *, pipelining: bool, **replies: bytes) -> None:
        self.pipelining = pipelining
        self.replies = {
            b"MAIL": b"250 ok",
            b"RCPT": b"250 ok",
            b"DATA": b"354 go ahead",
            b"END": b"250 queued",
        }
        self.replies.update({k.encode(): v for k, v in replies.items()})
        self.wire = bytearray()
        self.contents: list[bytes] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        held: list[bytes] = []  # replies of a pipelined group, sent once DATA arrived

        def reply(line: bytes, *, now: bool = False) -> None:
            held.append(line + b"\r\n")
            if now or not self.pipelining:
                conn.sendall(b"".join(held))
                held.clear()

        def read() -> bool:
            nonlocal buf
            chunk = conn.recv(65536)
            with self._lock:
                self.wire += chunk
            buf += chunk
            return bool(chunk)

        conn.sendall(b"220 raw ESMTP\r\n")
        with conn:
            while True:
                while b"\r\n" not in buf:
                    if not read():
                        return
                line, _, buf = buf.partition(b"\r\n")
                verb = line[:4].upper()
                if verb == b"EHLO":
                    extra = b"250-PIPELINING\r\n" if self.pipelining else b""
                    conn.sendall(b"250-raw\r\n" + extra + b"250 8BITMIME\r\n")
                elif verb in (b"MAIL", b"RCPT"):
                    reply(self.replies[verb])
                elif verb == b"DATA":
                    answer = self.replies[b"DATA"]
                    reply(answer, now=True)
                    if not answer.startswith(b"354"):
                        continue
                    while b"\r\n.\r\n" not in b"\r\n" + buf:
                        if not read():
                            return
                    content, _, buf = (b"\r\n" + buf).partition(b"\r\n.\r\n")
                    self.contents.append(content[2:])
                    reply(self.replies[b"END"], now=True)
                elif verb == b"QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                else:  # RSET, NOOP
                    reply(b"250 ok", now=True)

    def settings(self, **overrides: object) -> SmtpSettings:
        cfg = {"host": "127.0.0.1", "port": self.port, "timeout_seconds": 3.0, **overrides}
        return settings_from_mapping({"smtp": cfg}).smtp

    def close(self) -> None:
        self._sock.close()


@pytest.fixture
def raw() -> Iterator[RawServer]:
    server = RawServer(pipelining=True)
    try:
        yield server
    finally:
        server.close()


MESSAGES = [
    OutgoingMessage(
        "Digest <digest@example.org>",
        "ada@example.org",
        b"Subject: one\r\n\r\n.leading dot\r\nbody\r\n",
    ),
    OutgoingMessage(
        "Digest <digest@example.org>",
        "Grace Hopper <grace@example.org>",
        "Subject: two\nContent-Transfer-Encoding: 8bit\n\ncafé\n..\nend".encode(),
    ),
    OutgoingMessage("digest@example.org", "x.y+z@sub.example.org", b"Subject: three\r\n\r\n."),
]


def _wire(server: RawServer) -> bytes:
    with SmtpSender(server.settings()) as sender:
        for m in MESSAGES:
            sender.send(m)
    return bytes(server.wire)


def test_the_bytes_on_the_wire_are_those_without_pipelining() -> None:
    pipelined, classic = RawServer(pipelining=True), RawServer(pipelining=False)
    try:
        # The pipelining server answers a group only once MAIL, RCPT and DATA arrived.
        assert _wire(pipelined) == _wire(classic)
        assert pipelined.contents == classic.contents and len(pipelined.contents) == 3
    finally:
        pipelined.close()
        classic.close()
    assert b"mail FROM:<digest@example.org> BODY=8BITMIME\r\nrcpt TO:<grace@example.org>\r\n" in (
        pipelined.wire
    )


@given(
    st.text(
        alphabet=st.sampled_from('ab.-_+=@<>"() ,;:\\[]é\t'),
        max_size=24,
    )
)
def test_addresses_are_quoted_as_smtplib_quotes_them(address: str) -> None:
    assert quoteaddr(address) == smtplib.quoteaddr(address)


def test_the_mark_comes_before_anything_of_the_transaction(raw: RawServer) -> None:
    seen: list[bytes] = []
    with SmtpSender(raw.settings()) as sender:
        sender.send(MESSAGES[0], before_data=lambda: seen.append(bytes(raw.wire)))
        sender.send(MESSAGES[1], before_data=lambda: seen.append(bytes(raw.wire)))
    assert b"mail" not in seen[0].lower()
    assert seen[1].lower().count(b"mail from") == 1  # only the first message's
    assert len(raw.contents) == 2


def test_refused_rcpt_after_the_mark_is_raised_and_nothing_is_delivered(
    smtp_server: SmtpTestServer,
) -> None:
    smtp_server.add_fault(Fault("RCPT", "550 5.1.1 No such user", frozenset({"gone@example.org"})))
    marks: list[str] = []
    with SmtpSender(settings_from_mapping({"smtp": smtp_server.smtp_config()}).smtp) as sender:
        with pytest.raises(DeliveryError) as e:
            sender.send(
                OutgoingMessage("d@example.org", "gone@example.org", b"Subject: x\r\n\r\nhi\r\n"),
                before_data=lambda: marks.append("gone"),
            )
        assert e.value.permanent and e.value.code == 550
        assert str(e.value).startswith("gone@example.org: RCPT TO rejected: 550 5.1.1")
        # The connection is still good for the next message.
        sender.send(OutgoingMessage("d@example.org", "ok@example.org", b"Subject: y\r\n\r\nhi\r\n"))
    assert marks == ["gone"]  # marked first: a pipelined RCPT is refused after the mark
    assert [m.rcpt_tos for m in smtp_server.messages] == [("ok@example.org",)]
    assert smtp_server.handler.connections == 1


def test_refused_data_after_the_mark_is_raised(smtp_server: SmtpTestServer) -> None:
    smtp_server.add_fault(Fault("DATA", "554 5.6.0 Message rejected", times=1))
    with SmtpSender(settings_from_mapping({"smtp": smtp_server.smtp_config()}).smtp) as sender:
        with pytest.raises(DeliveryError) as e:
            sender.send(OutgoingMessage("d@example.org", "a@example.org", b"Subject: x\r\n\r\n"))
        assert e.value.permanent and str(e.value).startswith("a@example.org: DATA rejected: 554")
        sender.send(OutgoingMessage("d@example.org", "b@example.org", b"Subject: x\r\n\r\n"))
    assert [m.rcpt_tos for m in smtp_server.messages] == [("b@example.org",)]


def test_refused_data_command_is_raised_and_no_content_follows() -> None:
    server = RawServer(pipelining=True, DATA=b"451 4.3.0 not now")
    try:
        with SmtpSender(server.settings()) as sender, pytest.raises(DeliveryError) as e:
            sender.send(MESSAGES[0])
        assert not e.value.permanent and "DATA rejected: 451 4.3.0 not now" in str(e.value)
        assert server.contents == [] and b".leading dot" not in server.wire
    finally:
        server.close()


def test_data_accepted_after_a_refused_rcpt_gets_only_the_end_of_data() -> None:
    # RFC 2920 3.1: a server may accept DATA though no recipient was; the client then
    # sends a lone dot, so an empty transaction (no recipient) ends and nothing is sent.
    server = RawServer(pipelining=True, RCPT=b"550 5.1.1 no such user", END=b"554 no recipients")
    try:
        with SmtpSender(server.settings()) as sender, pytest.raises(DeliveryError) as e:
            sender.send(MESSAGES[0])
        assert e.value.permanent and "RCPT TO rejected: 550 5.1.1" in str(e.value)
        assert server.contents == [b""] and b".leading dot" not in server.wire
        assert server.wire.endswith(b"data\r\n.\r\nrset\r\nquit\r\n")
    finally:
        server.close()


def test_without_pipelining_the_mark_waits_for_the_recipient() -> None:
    server = start_smtp_server()  # aiosmtpd as it is: no PIPELINING
    server.add_fault(Fault("RCPT", "550 5.1.1 No such user", frozenset({"gone@example.org"})))
    marks: list[str] = []
    try:
        with SmtpSender(settings_from_mapping({"smtp": server.smtp_config()}).smtp) as sender:
            with pytest.raises(DeliveryError):
                sender.send(
                    OutgoingMessage("d@example.org", "gone@example.org", b"Subject: x\r\n\r\n"),
                    before_data=lambda: marks.append("gone"),
                )
            sender.send(
                OutgoingMessage("d@example.org", "ok@example.org", b"Subject: x\r\n\r\n"),
                before_data=lambda: marks.append("ok"),
            )
    finally:
        server.controller.stop()
    assert marks == ["ok"]  # a refused recipient is never marked


def test_a_stale_connection_is_replaced_and_the_mark_not_repeated(
    smtp_server: SmtpTestServer,
) -> None:
    marks: list[str] = []
    with SmtpSender(settings_from_mapping({"smtp": smtp_server.smtp_config()}).smtp) as sender:
        sender.send(OutgoingMessage("d@example.org", "a@example.org", b"Subject: x\r\n\r\n"))
        smtp_server.add_fault(Fault("MAIL", "421 4.4.2 Error: timeout exceeded", times=1))
        sender.send(
            OutgoingMessage("d@example.org", "b@example.org", b"Subject: x\r\n\r\n"),
            before_data=lambda: marks.append("b"),
        )
    assert marks == ["b"]
    assert [m.rcpt_tos for m in smtp_server.messages] == [("a@example.org",), ("b@example.org",)]
    assert smtp_server.handler.connections == 2


def test_mail_refused_for_authentication_leaves_the_digests_pending(
    engine: Engine, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    # Marked before MAIL, then the server wants a login: not the digests' fault, and
    # nothing left; they go back to pending, charged nothing, for the next run.
    add_subscribers(engine, ["a@example.org", "b@example.org"])
    add_entries(engine, ["Bilevel optimization"], first_seen=DAY0 - timedelta(hours=1))
    smtp_server.add_fault(Fault("MAIL", "530 5.7.0 Authentication required"))
    summary = run(engine, make_settings(smtp_server, tmp_path), ManualClock(DAY0))
    assert summary.error is not None and "requires authentication" in summary.error
    assert (summary.sent, summary.failed) == (0, 0)
    assert [(d.status, d.attempts, d.claimed_by) for d in digests(engine)] == [
        ("pending", 0, None)
    ] * 2
    smtp_server.handler.faults.clear()
    assert run(engine, make_settings(smtp_server, tmp_path), ManualClock(DAY0)).sent == 2
    assert smtp_server.per_recipient() == {"a@example.org": 1, "b@example.org": 1}


def test_rcpt_refused_after_the_mark_fails_the_digest_and_frees_its_entries(
    engine: Engine, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    add_subscribers(engine, ["gone@example.org", "ok@example.org"])
    add_entries(engine, ["Bilevel optimization"], first_seen=DAY0 - timedelta(hours=1))
    smtp_server.add_fault(Fault("RCPT", "550 5.1.1 No such user", frozenset({"gone@example.org"})))
    summary = run(engine, make_settings(smtp_server, tmp_path), ManualClock(DAY0))
    assert (summary.sent, summary.failed, summary.ambiguous) == (1, 1, 0)
    assert sorted(d.status for d in digests(engine)) == ["failed", "sent"]
