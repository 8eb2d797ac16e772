"""SMTP delivery: :class:`SmtpSender`, a pool of reused connections behind ``Sender``.

The classes of failure (:class:`~newsletter.delivery.base.SmtpUnavailableError`, permanent
or temporary :class:`~newsletter.errors.DeliveryError`) are what the send pipeline
acts on; which reply codes mean what is decided here.
"""

from __future__ import annotations

import binascii
import contextlib
import email
import email.policy
import logging
import random
import re
import smtplib
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.generator import BytesGenerator
from io import BytesIO

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
from newsletter.errors import ConfigError, DeliveryError

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


def to_crlf(data: bytes) -> bytes:
    """``data`` with every bare LF made CRLF, as DATA requires (RFC 5321 section 2.3.8).

    Messages built by :mod:`newsletter.render.mime` already end lines with CRLF, so counting
    first (two C-speed scans, no copy) returns ``data`` itself. Otherwise every CRLF is
    made LF and every LF CRLF: the same bytes as replacing each LF not preceded by CR
    (CRs elsewhere, ``\r\r\n`` included, are kept), at C speed.
    """
    if data.count(b"\n") == data.count(b"\r\n"):
        return data
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def dot_stuffed(data: bytes) -> bytes:
    """What ``smtplib.SMTP.data`` sends for ``data`` (CRLF line ends): a line starting
    with "." gets another (RFC 5321 section 4.5.2), a final CRLF if missing, and the
    end-of-data line ``.CRLF``.

    ``smtplib`` does the stuffing with a regular expression, about a third of the
    sender's CPU for a 56 KB message; ``bytes.replace`` gives the same bytes.
    """
    q = data.replace(b"\n.", b"\n..")
    if q[:1] == b".":
        q = b"." + q
    if q[-2:] != b"\r\n":
        q += b"\r\n"
    return q + b".\r\n"


def _data(smtp: smtplib.SMTP, stuffed: bytes) -> tuple[int, bytes]:
    """``smtp.data`` for bytes already :func:`dot_stuffed` (same replies, same errors)."""
    smtp.putcmd("data")
    code, repl = smtp.getreply()
    if code != 354:
        raise smtplib.SMTPDataError(code, repl)
    smtp.send(stuffed)
    return smtp.getreply()


_RAW_PART = re.compile(rb"Content-Transfer-Encoding: [78]bit\r\n\r\n")
_BOUNDARY = re.compile(rb'\r\nContent-Type: multipart/alternative;\r\n boundary="([^"]+)"\r\n\r\n')


def quoted_printable_bodies(data: bytes) -> bytes | None:
    """A message built by ``newsletter.render.mime`` with 8bit (or 7bit) bodies, its
    bodies made quoted-printable: the very bytes the builder makes with quoted-printable
    bodies (its boundary depends on the bodies' text, not their encoding). None when
    ``data`` is not such a message.

    What a server without 8BITMIME gets, and what the preview's ``.eml`` holds.
    """
    head = _BOUNDARY.search(data)
    if head is None:
        return None
    end_of_body = b"\r\n--" + head.group(1)
    out: list[bytes] = []
    at = 0
    for part in _RAW_PART.finditer(data, head.end()):
        if part.start() < at:
            return None  # a marker inside a body: not a message of ours
        end = data.find(end_of_body, part.end())
        if end < 0:
            return None
        body = data[part.end() : end].replace(b"\r\n", b"\n")  # LF line ends
        qp = binascii.b2a_qp(body, quotetabs=False, istext=True, header=False)
        out += (data[at : part.start()], b"Content-Transfer-Encoding: quoted-printable\r\n\r\n")
        out.append(qp.replace(b"\n", b"\r\n"))
        at = end
    if not out:
        return None
    out.append(data[at:])
    return b"".join(out)


def to_7bit(data: bytes) -> bytes:
    """Re-encode 8-bit body parts (quoted-printable/base64) for servers without 8BITMIME:
    the newsletter's own messages exactly as if built quoted-printable
    (:func:`quoted_printable_bodies`), anything else through the ``email`` package."""
    own = quoted_printable_bodies(data)
    if own is not None and own.isascii():
        return own
    msg = email.message_from_bytes(data, policy=email.policy.SMTP)
    out = BytesIO()
    BytesGenerator(out, policy=email.policy.SMTP.clone(cte_type="7bit")).flatten(msg)
    return out.getvalue()


@dataclass
class _Connection:
    smtp: smtplib.SMTP
    sent: int = 0


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

    def _payload(self, conn: _Connection, data: bytes) -> tuple[bytes, list[str]]:
        """The bytes for DATA (CRLF line endings, dot-stuffed, with the end-of-data line)
        and the MAIL FROM options they need."""
        options: list[str] = []
        if not data.isascii():
            if conn.smtp.has_extn("8bitmime"):
                options.append("BODY=8BITMIME")
            else:
                data = to_7bit(data)
        return dot_stuffed(to_crlf(data)), options

    def _mail_from(self, message: OutgoingMessage, held: list[_Connection]) -> bytes:
        """Open the transaction on a pooled connection (left in ``held``); a reused one
        found dead is replaced once, since nothing was sent on it yet."""
        conn, reused = self._checkout()
        held.append(conn)
        for last_try in (not reused, True):
            data, options = self._payload(conn, message.data)
            try:
                code, resp = conn.smtp.mail(message.envelope_from, options)
            except (OSError, smtplib.SMTPServerDisconnected):
                if last_try:
                    raise
                code, resp = 421, b"connection closed"
            if code == 421 and not last_try:
                # Servers drop idle clients (often saying 421 first).
                log.debug("reused SMTP connection was closed by the server; reconnecting")
                held.clear()
                self._drop(conn)
                conn = self._connect()
                held.append(conn)
                continue
            if code != 250:
                raise self._reply_error("MAIL FROM", code, resp, message.recipient)
            return data
        raise AssertionError("unreachable")  # pragma: no cover

    def send(
        self, message: OutgoingMessage, before_data: Callable[[], None] = nothing_before_data
    ) -> Receipt:
        self._pace()
        rcpt = message.recipient
        held: list[_Connection] = []  # the connection in use, once there is one
        keep = False  # return it to the pool afterwards
        try:
            data = self._mail_from(message, held)
            smtp = held[0].smtp
            code, resp = smtp.rcpt(rcpt)
            if code not in (250, 251):
                raise self._reply_error("RCPT TO", code, resp, rcpt)
            before_data()
            code, resp = _data(smtp, data)
            if code != 250:
                raise self._reply_error("DATA", code, resp, rcpt)
            held[0].sent += 1
            keep = True
        except DeliveryError as e:
            # A reply: the connection is fine unless the server is closing it (421).
            keep = e.code is not None and e.code != 421 and not isinstance(e, SmtpUnavailableError)
            if keep and held:
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
                if keep:
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
