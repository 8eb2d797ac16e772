"""ESMTP PIPELINING (RFC 2920): MAIL, RCPT and DATA in one write, their replies together.

Without it a message costs four round trips (MAIL, RCPT, DATA, the content), each a
write, a wait, a wake-up and a reply parsed; with it, two. The commands are the very
bytes ``smtplib``'s ``mail``, ``rcpt`` and ``putcmd("data")`` write, one after the other;
only their grouping into TCP segments differs. Replies are read in order with
``smtplib``'s own ``getreply``, so errors and limits are its own.

Every reply of a group is checked (RFC 2920 section 3.1): a refused MAIL or RCPT does
not stop the server from accepting DATA, in which case a lone dot ends the (recipient-
less) transaction before anything else is said.
"""

from __future__ import annotations

import re
import smtplib
from dataclasses import dataclass
from functools import lru_cache

Reply = tuple[int, bytes]

# An address ``email.utils.parseaddr`` returns unchanged: dot-separated atoms of these
# characters, "@", dot-separated labels. ``smtplib.quoteaddr`` makes it "<address>".
_ATOM = r"[A-Za-z0-9_+=-]+"
_LABEL = r"[A-Za-z0-9-]+"
_PLAIN_ADDRESS = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})*")


@lru_cache(maxsize=64)
def _quoted_cached(address: str) -> str:
    return str(smtplib.quoteaddr(address))


def quoteaddr(address: str) -> str:
    """``smtplib.quoteaddr(address)``, without parsing a plain address (most recipients)
    or the same envelope sender again."""
    if _PLAIN_ADDRESS.fullmatch(address):
        return f"<{address}>"
    return _quoted_cached(address)


def _command(smtp: smtplib.SMTP, line: str) -> bytes:
    """What ``smtp.putcmd`` writes for ``line`` (and its refusal of a line break)."""
    if "\r" in line or "\n" in line:
        shown = line.replace("\n", "\\n").replace("\r", "\\r")
        raise ValueError(f"command and arguments contain prohibited newline characters: {shown}")
    return f"{line}\r\n".encode(smtp.command_encoding)


def envelope_commands(smtp: smtplib.SMTP, sender: str, recipient: str, options: list[str]) -> bytes:
    """The bytes of ``smtp.mail(sender, options)``, ``smtp.rcpt(recipient)`` and DATA.

    Raises as ``smtplib`` would (a line break, an address not in ``command_encoding``)
    before anything is written.
    """
    # ``smtp.mail`` also switches to UTF-8 for an SMTPUTF8 option; the sender never
    # asks for one (its only option is BODY=8BITMIME).
    optionlist = " " + " ".join(options) if options and smtp.does_esmtp else ""
    return b"".join(
        (
            _command(smtp, f"mail FROM:{quoteaddr(sender)}{optionlist}"),
            _command(smtp, f"rcpt TO:{quoteaddr(recipient)}"),
            _command(smtp, "data"),
        )
    )


@dataclass(frozen=True, slots=True)
class Replies:
    """The replies to one pipelined group; None where none was read because the server
    said it is closing the connection (421) before."""

    mail: Reply
    rcpt: Reply | None
    data: Reply | None

    @property
    def closing(self) -> bool:
        return self.data is None


def send_envelope(smtp: smtplib.SMTP, commands: bytes) -> Replies:
    """Write the group, then read its replies in order (raises as ``smtplib`` does when
    the connection fails)."""
    smtp.send(commands)
    mail = smtp.getreply()
    if mail[0] == 421:
        return Replies(mail, None, None)
    rcpt = smtp.getreply()
    if rcpt[0] == 421:
        return Replies(mail, rcpt, None)
    return Replies(mail, rcpt, smtp.getreply())


def end_empty(smtp: smtplib.SMTP) -> Reply:
    """DATA was accepted although MAIL or RCPT was refused: send only the end-of-data
    line, so nothing is delivered (RFC 2920 section 3.1), and read the reply."""
    smtp.send(b".\r\n")
    return smtp.getreply()
