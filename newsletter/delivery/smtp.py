"""SMTP delivery: :class:`SmtpSender`, a pool of reused connections behind ``Sender``.

The classes of failure (:class:`~newsletter.delivery.base.SmtpUnavailableError`, permanent
or temporary :class:`~newsletter.errors.DeliveryError`) are what the send pipeline
acts on; which reply codes mean what is decided here.
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
import smtplib
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from newsletter.config import SmtpSettings
from newsletter.delivery.base import (
    OutgoingMessage,
    Receipt,
    Sender,
    SmtpThrottledError,
    SmtpUnavailableError,
    backoff_seconds,
    nothing_before_data,
)
from newsletter.delivery.payload import (
    dot_stuffed,
    payload,
    quoted_printable_bodies,
    to_7bit,
    to_crlf,
)
from newsletter.delivery.pipelining import Replies, end_empty, envelope_commands, send_envelope
from newsletter.errors import ConfigError, DeliveryError

__all__ = [
    "TEMPORARY_CODES",
    "SmtpSender",
    "dot_stuffed",
    "quoted_printable_bodies",
    "to_7bit",
    "to_crlf",
]

log = logging.getLogger(__name__)

# Reply codes RFC 5321 calls transient that are worth another try later.
TEMPORARY_CODES = frozenset({421, 450, 451, 452, 454})
_THROTTLE_WORDS = re.compile(
    r"rate|too many|too fast|throttl|limit|slow down|try again later|exceed", re.IGNORECASE
)
_AUTH_CODES = frozenset({530, 534, 535, 538})


def _reply_text(resp: bytes | str) -> str:
    text = resp.decode("utf-8", "replace") if isinstance(resp, bytes) else resp
    return " ".join(text.split())


@dataclass
class _Connection:
    smtp: smtplib.SMTP
    sent: int = 0
    closing: bool = False  # the server said it closes it (421): never reuse


class SmtpSender(Sender):
    """SMTP over a pool of reused connections, shared by threads, with a shared throttle.

    A connection is reused for ``max_per_connection`` messages, then replaced; a reused
    connection that turns out dead before ``MAIL`` (servers drop idle clients) is
    replaced once, transparently, since nothing was sent on it. Everything else is
    reported to the caller as a :class:`DeliveryError`, classified:

    - :class:`SmtpUnavailableError`: cannot connect, greet, start TLS or log in;
    - ``permanent=True``: a 5xx reply for this message (mark it failed, go on);
    - otherwise temporary: a 4xx reply, a dropped connection or a timeout (retry later);
      :class:`SmtpThrottledError` when the reply asks to slow down, which also pauses
      every thread of this sender for a backoff interval.
    """

    def __init__(
        self,
        settings: SmtpSettings,
        *,
        password: str | None = None,
        local_hostname: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.password = password
        self.local_hostname = local_hostname
        self.parallelism = settings.connections
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._open: list[_Connection] = []  # every live connection
        self._idle: list[_Connection] = []  # those not in use right now
        self._next_slot = 0.0
        self._paused_until = 0.0
        self._throttle_strikes = 0

    def describe(self) -> str:
        s = self.settings
        mode = "ssl" if s.ssl else "starttls" if s.starttls else "plain"
        return f"smtp://{s.host}:{s.port} ({mode}, {s.connections} connection(s))"

    # -- connections -------------------------------------------------------------------

    def _tls_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        if not self.settings.verify_tls:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def _unavailable(
        self, what: str, e: BaseException, *, permanent: bool = False
    ) -> DeliveryError:
        s = self.settings
        code = getattr(e, "smtp_code", None)
        detail = _reply_text(e.smtp_error) if isinstance(e, smtplib.SMTPResponseException) else e
        return SmtpUnavailableError(
            f"{what} {s.host}:{s.port} failed: {detail or type(e).__name__}",
            code=code if isinstance(code, int) else None,
            permanent=permanent,
        )

    def _connect(self) -> _Connection:
        s = self.settings
        try:
            smtp: smtplib.SMTP
            if s.ssl:
                smtp = smtplib.SMTP_SSL(
                    s.host,
                    s.port,
                    local_hostname=self.local_hostname,
                    timeout=s.timeout_seconds,
                    context=self._tls_context(),
                )
            else:
                smtp = smtplib.SMTP(
                    s.host, s.port, local_hostname=self.local_hostname, timeout=s.timeout_seconds
                )
        except ssl.SSLCertVerificationError as e:
            raise self._unavailable("TLS certificate check of", e, permanent=True) from e
        except (OSError, smtplib.SMTPException) as e:
            raise self._unavailable("connecting to", e) from e
        try:
            self._handshake(smtp)
        except BaseException:
            _quietly_close(smtp)
            raise
        conn = _Connection(smtp)
        with self._lock:
            self._open.append(conn)
        return conn

    def _handshake(self, smtp: smtplib.SMTP) -> None:
        s = self.settings
        try:
            code, resp = smtp.ehlo()
            if 500 <= code < 600:  # EHLO unknown to an old server: try HELO
                code, resp = smtp.helo()
            if not 200 <= code < 300:
                raise smtplib.SMTPHeloError(code, resp)
            if s.starttls:
                smtp.starttls(context=self._tls_context())
                smtp.ehlo()
        except ssl.SSLCertVerificationError as e:
            raise self._unavailable("TLS certificate check of", e, permanent=True) from e
        except smtplib.SMTPNotSupportedError as e:
            raise self._unavailable("STARTTLS (not offered) with", e, permanent=True) from e
        except (OSError, smtplib.SMTPException) as e:
            raise self._unavailable("greeting", e) from e
        if s.username:
            if self.password is None:
                raise ConfigError(
                    "smtp.username is set but no password: set smtp.password_env to the name "
                    "of an environment variable holding it"
                )
            try:
                smtp.login(s.username, self.password)
            except smtplib.SMTPAuthenticationError as e:
                raise self._unavailable("login to", e, permanent=True) from e
            except (OSError, smtplib.SMTPException) as e:
                raise self._unavailable("login to", e) from e

    def _checkout(self) -> tuple[_Connection, bool]:
        """An idle connection (and True: it may have gone stale) or a new one (False)."""
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is not None and conn.sent >= self.settings.max_per_connection:
            self._drop(conn, quit_=True)
            conn = None
        if conn is None:
            return self._connect(), False
        return conn, True

    def _checkin(self, conn: _Connection) -> None:
        with self._lock:
            if conn in self._open:
                self._idle.append(conn)

    def _drop(self, conn: _Connection, *, quit_: bool = False) -> None:
        with self._lock:
            if conn in self._open:
                self._open.remove(conn)
            if conn in self._idle:
                self._idle.remove(conn)
        if quit_:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                conn.smtp.quit()
        _quietly_close(conn.smtp)

    def close(self) -> None:
        with self._lock:
            conns, self._open, self._idle = self._open, [], []
        for conn in conns:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                conn.smtp.quit()
            _quietly_close(conn.smtp)

    # -- pacing --------------------------------------------------------------------------

    def _pace(self) -> None:
        """Wait for a throttle pause and for this message's slot under ``max_per_second``."""
        rate = self.settings.max_per_second
        with self._lock:
            now = self._clock()
            start = max(now, self._paused_until)
            if rate > 0:
                start = max(start, self._next_slot)
                self._next_slot = start + 1.0 / rate
        if start > now:
            self._sleep(start - now)

    def _throttled(self) -> float:
        with self._lock:
            self._throttle_strikes += 1
            delay = backoff_seconds(
                self._throttle_strikes,
                self.settings.retry_base_seconds,
                self.settings.retry_max_seconds,
                self._rng,
            )
            self._paused_until = max(self._paused_until, self._clock() + delay)
        log.warning("SMTP server asks to slow down; pausing %.1fs", delay)
        return delay

    # -- sending -------------------------------------------------------------------------

    def _reply_error(
        self, stage: str, code: int, resp: bytes | str, recipient: str
    ) -> DeliveryError:
        text = _reply_text(resp)
        message = f"{stage} rejected: {code} {text}".rstrip()
        if 400 <= code < 500:
            if code in (421, 451, 452) and _THROTTLE_WORDS.search(text):
                self._throttled()
                return SmtpThrottledError(message, recipient=recipient, code=code)
            return DeliveryError(message, recipient=recipient, code=code)
        if stage == "MAIL FROM" and code in _AUTH_CODES:
            s = self.settings
            return SmtpUnavailableError(
                f"{s.host}:{s.port} requires authentication: {code} {text}",
                code=code,
                permanent=True,
            )
        return DeliveryError(message, recipient=recipient, code=code, permanent=code >= 500)

    def _payload(self, conn: _Connection, message: OutgoingMessage) -> tuple[bytes, list[str]]:
        """The bytes for DATA (CRLF line endings, dot-stuffed, with the end-of-data line)
        and the MAIL FROM options they need."""
        data, plain = message.data, message.plain_lines
        options: list[str] = []
        if not data.isascii():
            if conn.smtp.has_extn("8bitmime"):
                options.append("BODY=8BITMIME")
            else:
                data, plain = to_7bit(data), False
        return payload(data, plain), options

    def _replace(self, conn: _Connection, held: list[_Connection]) -> _Connection:
        """A reused connection the server closed meanwhile (servers drop idle clients,
        often saying 421 first), replaced by a new one; nothing was sent on it."""
        log.debug("reused SMTP connection was closed by the server; reconnecting")
        held.clear()
        self._drop(conn)
        conn = self._connect()
        held.append(conn)
        return conn

    def _classic(
        self,
        message: OutgoingMessage,
        before_data: Callable[[], None],
        held: list[_Connection],
        reused: bool,
    ) -> tuple[int, bytes]:
        """One command at a time (no PIPELINING): MAIL, RCPT, ``before_data``, DATA."""
        conn = held[0]
        rcpt = message.recipient
        for last_try in (not reused, True):
            data, options = self._payload(conn, message)
            try:
                code, resp = conn.smtp.mail(message.envelope_from, options)
            except (OSError, smtplib.SMTPServerDisconnected):
                if last_try:
                    raise
                code, resp = 421, b"connection closed"
            if code == 421 and not last_try:
                conn = self._replace(conn, held)
                continue
            if code != 250:
                raise self._reply_error("MAIL FROM", code, resp, rcpt)
            break
        smtp = conn.smtp
        code, resp = smtp.rcpt(rcpt)
        if code not in (250, 251):
            raise self._reply_error("RCPT TO", code, resp, rcpt)
        before_data()
        smtp.putcmd("data")
        code, resp = smtp.getreply()
        if code != 354:
            raise self._reply_error("DATA", code, resp, rcpt)
        smtp.send(data)
        return smtp.getreply()

    def _pipelined(
        self,
        message: OutgoingMessage,
        before_data: Callable[[], None],
        held: list[_Connection],
        reused: bool,
    ) -> tuple[int, bytes]:
        """``before_data`` first, then MAIL, RCPT and DATA in one write (RFC 2920).

        The mark is committed before any command of the transaction leaves, so a
        refusal of any of them comes after it: raised as a :class:`DeliveryError` like
        any refusal, for the caller to fail or reschedule the marked digest.
        """
        conn = held[0]
        data, options = self._payload(conn, message)
        # Built first: an address smtplib would refuse is refused before the mark.
        commands = envelope_commands(conn.smtp, message.envelope_from, message.recipient, options)
        before_data()
        for last_try in (not reused, True):
            replies: Replies | None = None
            try:
                replies = send_envelope(conn.smtp, commands)
            except (OSError, smtplib.SMTPServerDisconnected):
                if last_try:
                    raise
            if not last_try and (replies is None or replies.mail[0] == 421):
                conn = self._replace(conn, held)
                if not conn.smtp.has_extn("pipelining"):
                    return self._classic(message, nothing_before_data, held, False)
                data, options = self._payload(conn, message)
                commands = envelope_commands(
                    conn.smtp, message.envelope_from, message.recipient, options
                )
                continue
            assert replies is not None
            return self._content(conn, message.recipient, data, replies)
        raise AssertionError("unreachable")  # pragma: no cover

    def _content(
        self, conn: _Connection, rcpt: str, data: bytes, replies: Replies
    ) -> tuple[int, bytes]:
        """After a pipelined group: the content if every reply said yes, else the first
        refusal (with the transaction ended cleanly when DATA was accepted anyway)."""
        refusal: DeliveryError | None = None
        code, resp = replies.mail
        if code != 250:
            refusal = self._reply_error("MAIL FROM", code, resp, rcpt)
        elif replies.rcpt is not None and replies.rcpt[0] not in (250, 251):
            refusal = self._reply_error("RCPT TO", *replies.rcpt, rcpt)
        if replies.data is None:  # 421: the server is closing the connection
            conn.closing = True
            assert refusal is not None
            raise refusal
        code, resp = replies.data
        if code != 354:
            raise refusal or self._reply_error("DATA", code, resp, rcpt)
        if refusal is not None:
            end_empty(conn.smtp)
            raise refusal
        conn.smtp.send(data)
        return conn.smtp.getreply()

    def send(
        self, message: OutgoingMessage, before_data: Callable[[], None] = nothing_before_data
    ) -> Receipt:
        self._pace()
        rcpt = message.recipient
        held: list[_Connection] = []  # the connection in use, once there is one
        keep = False  # return it to the pool afterwards
        try:
            conn, reused = self._checkout()
            held.append(conn)
            if conn.smtp.has_extn("pipelining"):
                code, resp = self._pipelined(message, before_data, held, reused)
            else:
                code, resp = self._classic(message, before_data, held, reused)
            if code != 250:
                raise self._reply_error("DATA", code, resp, rcpt)
            held[0].sent += 1
            keep = True
        except DeliveryError as e:
            # A reply: the connection is fine unless the server is closing it (421).
            keep = e.code is not None and e.code != 421 and not isinstance(e, SmtpUnavailableError)
            if keep and held and not held[0].closing:
                _quietly_rset(held[0].smtp)
            raise
        except (OSError, smtplib.SMTPServerDisconnected) as e:
            kind = "timed out" if isinstance(e, TimeoutError) else "lost"
            raise DeliveryError(
                f"connection {kind}: {e or type(e).__name__}", recipient=rcpt
            ) from e
        except smtplib.SMTPException as e:
            raise DeliveryError(f"SMTP error: {e}", recipient=rcpt) from e
        except BaseException:
            # before_data refused: nothing was sent; end the transaction, keep the line.
            if held:
                _quietly_rset(held[0].smtp)
                keep = True
            raise
        finally:
            if held:
                if keep and not held[0].closing:
                    self._checkin(held[0])
                else:
                    self._drop(held[0])
        with self._lock:
            self._throttle_strikes = 0
        return Receipt(reply=f"{code} {_reply_text(resp)}", message_id=message.message_id)


def _quietly_rset(smtp: smtplib.SMTP) -> None:
    with contextlib.suppress(OSError, smtplib.SMTPException):
        smtp.rset()


def _quietly_close(smtp: smtplib.SMTP) -> None:
    with contextlib.suppress(OSError):
        smtp.close()
