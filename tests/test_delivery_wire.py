"""The bytes on the wire: ``SmtpSender`` stuffs dots and fixes line ends itself (at C
speed), and sends exactly what ``smtplib.SMTP.sendmail`` sent before it did.

Checked twice: against smtplib's own quoting functions on arbitrary bytes, and at a real
server (aiosmtpd), which receives the same content from both ways of sending.
"""

from __future__ import annotations

import re
import smtplib

from hypothesis import given
from hypothesis import strategies as st

from newsletter.config import settings_from_mapping
from newsletter.delivery import OutgoingMessage
from newsletter.delivery.payload import payload, plain_lines
from newsletter.delivery.smtp import SmtpSender, dot_stuffed, to_crlf
from tests.support.smtp import SmtpTestServer

_BARE_LF = re.compile(rb"(?<!\r)\n")  # what to_crlf did before, with a regex


def _smtplib_data(data: bytes) -> bytes:
    """What ``smtplib.SMTP.data`` writes to the socket for ``data`` after DATA."""
    q = smtplib._quote_periods(data)  # type: ignore[attr-defined]
    if q[-2:] != b"\r\n":
        q += b"\r\n"
    return bytes(q + b".\r\n")


TRICKY = [
    b".leading dot\r\nbody\r\n",
    b"Subject: x\r\n\r\n.\r\n..\r\n...\r\nend",
    b"Subject: x\n\n.bare lf dot\n.\nlast",
    b"Subject: x\r\n\r\nmixed\n.dot after bare LF\r\n.dot after CRLF\r\r\n.cr cr lf\r",
    b"\n.\n",
    b".",
    b"",
    b"Subject: caf\xc3\xa9\r\n\r\n=2E qp dot\r\n.\xc3\xa9 8bit dot\r\n",
]


@given(st.lists(st.sampled_from([b".", b"\r", b"\n", b"\r\n", b"a", b"\xc3\xa9", b" "])))
def test_stuffing_and_line_ends_are_smtplibs_bytes(pieces: list[bytes]) -> None:
    data = b"".join(pieces)
    assert to_crlf(data) == _BARE_LF.sub(b"\r\n", data)
    crlf = to_crlf(data)
    assert dot_stuffed(crlf) == _smtplib_data(crlf)


@given(st.lists(st.sampled_from([b".", b"\r", b"\n", b"\r\n", b"a", b"\xc3\xa9", b" "])))
def test_a_message_checked_plain_goes_out_as_the_same_bytes(pieces: list[bytes]) -> None:
    # Composing checks plain_lines; the sender then skips its scans, not a byte.
    data = b"".join(pieces)
    assert payload(data, plain_lines(data)) == dot_stuffed(to_crlf(data)) == payload(data)
    if plain_lines(data):
        assert to_crlf(data) is data and data.replace(b"\n.", b"\n..") == data


def test_the_tricky_messages_stuff_as_smtplib_does() -> None:
    for data in TRICKY:
        assert payload(data, plain_lines(data)) == _smtplib_data(_BARE_LF.sub(b"\r\n", data))
        crlf = _BARE_LF.sub(b"\r\n", data)
        assert to_crlf(data) == crlf
        assert dot_stuffed(crlf) == _smtplib_data(crlf)


def test_the_server_receives_what_smtplib_sendmail_delivered(smtp_server: SmtpTestServer) -> None:
    settings = settings_from_mapping({"smtp": smtp_server.smtp_config()}).smtp
    # Before: smtplib's own CRLF fix and dot-stuffing (sendmail -> data).
    with smtplib.SMTP(smtp_server.host, smtp_server.port) as plain:
        for data in TRICKY:
            crlf = _BARE_LF.sub(b"\r\n", data)
            plain.sendmail("d@example.org", ["before@example.org"], crlf, ["BODY=8BITMIME"])
    with SmtpSender(settings) as sender:
        for data in TRICKY:
            sender.send(OutgoingMessage("d@example.org", "after@example.org", data))
            checked = OutgoingMessage("d@example.org", "plain@example.org", data, plain_lines=True)
            if plain_lines(data):  # as composing marks them
                sender.send(checked)
    before = [m.data for m in smtp_server.received_by("before@example.org")]
    after = [m.data for m in smtp_server.received_by("after@example.org")]
    assert len(before) == len(after) == len(TRICKY)
    assert after == before
    plain = [m.data for m in smtp_server.received_by("plain@example.org")]
    assert plain == [b for b, d in zip(before, TRICKY, strict=True) if plain_lines(d)] != []
    assert after[0].startswith(b".leading dot")  # un-stuffed by the server, as sent
