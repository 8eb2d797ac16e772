"""The finished message: ``multipart/alternative`` bytes with list headers. Pure.

Written out directly, byte by byte (the ``email`` package, kept as the reference
builder, costs milliseconds per message). Values that reach a header are
cleaned first (no CR, LF or other control character survives), so a hostile feed
title or subscriber name can never add a header. ``List-Unsubscribe`` and ``List-Id``
are written pre-folded: the generic folder would turn a long URL into an RFC 2047
encoded-word, which no mail provider would follow.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email import policy as email_policy
from email.header import Header
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from functools import lru_cache

from newsletter.errors import ConfigError, RenderError
from newsletter.render.qp import quoted_printable

# Body encoding keeps every line short and 7-bit (safe for any relay); the message is
# serialised with the source of pre-folded headers left alone.
_POLICY = email_policy.SMTP.clone(refold_source="none")
_POLICY_UTF8 = email_policy.SMTPUTF8.clone(refold_source="none")
_LIST_ID_ATEXT = re.compile(r"^[A-Za-z0-9 !#$%&'*+/=?^_`{|}~.-]*$")
_ATOMS = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]+$")
_MSG_ID = re.compile(r"^<[\x21-\x3b\x3d\x3f-\x7e]+@[\x21-\x3b\x3d\x3f-\x7e]+>$")
_DOT_ATOM = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+$")
_MAX_8BIT_LINE = 998  # RFC 5321: a line of at most 998 octets before CRLF
_TARGET = re.compile(r"<[\x21-\x7e]+>")
_HEADER_MAX = 78


def header_text(value: str, *, limit: int = 0) -> str:
    """One line of header-safe text: control and format characters become spaces.

    CR and LF are what a header injection needs; the other control characters and
    line/paragraph separators would be folded or rejected by mail software.
    """
    if value.isprintable():  # no character of those categories
        text = " ".join(value.split())
    else:
        out = []
        for ch in value:
            cat = unicodedata.category(ch)
            out.append(" " if cat in ("Cc", "Cf", "Cs", "Zl", "Zp") else ch)
        text = " ".join("".join(out).split())
    if limit and len(text) > limit:
        cut = text.rfind(" ", 0, limit)
        text = text[: cut if cut > limit // 2 else limit].rstrip(" ,;:") + "…"
    return text


def _needs_encoding(text: str) -> bool:
    # "=?" would be read as the start of an RFC 2047 encoded-word, by receivers and by
    # the email package itself, which then writes the decoded CR/LF back out raw.
    return not text.isascii() or "=?" in text


def encode_header(text: str, name: str) -> str:
    """A header value folded at 78 columns; RFC 2047 encoded-words when not plain ASCII.

    Set with ``set_raw`` so the email package never re-parses (and decodes) it.
    """
    if len(name) + 2 + len(text) <= _HEADER_MAX and not _needs_encoding(text):
        return text  # what Header gives for a line that needs no folding
    return _encode_header(text, name)


@lru_cache(maxsize=8192)
def _encode_header(text: str, name: str) -> str:
    charset = "utf-8" if _needs_encoding(text) else "us-ascii"
    return str(
        Header(text, charset, maxlinelen=_HEADER_MAX, header_name=name).encode(linesep="\r\n")
    )


@dataclass(frozen=True, slots=True)
class Mailbox:
    """A parsed address: display name and addr-spec, the domain in ASCII (IDNA)."""

    name: str
    addr: str

    @property
    def domain(self) -> str:
        return self.addr.rpartition("@")[2]

    @property
    def ascii(self) -> bool:
        return self.addr.isascii()

    def header(self, name: str) -> str:
        """``phrase <addr>`` for the header ``name``, encoded and folded here."""
        if not self.name:
            return self.addr
        if _needs_encoding(self.name):
            phrase = encode_header(self.name, name)
        elif _ATOMS.match(self.name):
            phrase = self.name
        else:
            phrase = '"' + self.name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return f"{phrase} <{self.addr}>"


@lru_cache(maxsize=4096)
def _ascii_domain(domain: str) -> str:
    try:
        return domain.encode("idna").decode("ascii").lower()
    except UnicodeError as e:
        raise ValueError(f"invalid domain {domain!r}") from e


def mailbox(addr_spec: str, name: str = "") -> Mailbox:
    """A recipient or sender; :class:`ValueError` for anything that is not one address."""
    spec = addr_spec.strip()
    if not spec or (
        not spec.isprintable()
        and any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in spec)
    ):
        raise ValueError(f"invalid email address {addr_spec!r}")
    local, at, domain = spec.rpartition("@")
    if not at or not local or not domain or any(c in local for c in ' "<>(),;:\\[]'):
        raise ValueError(f"invalid email address {addr_spec!r}")
    if local.isascii() and not _DOT_ATOM.match(local):
        raise ValueError(f"invalid email address {addr_spec!r}")
    return Mailbox(name=header_text(name, limit=120), addr=f"{local}@{_ascii_domain(domain)}")


def parse_mailbox(value: str, *, key: str) -> Mailbox:
    """A configured ``Name <addr>`` string; a :class:`ConfigError` naming ``key`` if bad."""
    name, addr = parseaddr(value)
    try:
        return mailbox(addr, name)
    except ValueError as e:
        raise ConfigError(
            f"expected an address like 'Name <user@example.org>', got {value!r}", key=key
        ) from e


def message_id_for(*, list_id: str, recipient: str, period: str, domain: str) -> str:
    """A Message-ID unique per (list, subscriber, period) and stable across re-renders.

    The outbox holds one digest per subscriber and period, so this is unique per
    message; being stable, a hand-settled resend of an ambiguous digest is recognised
    as the same message by providers that de-duplicate, and previews are reproducible.
    """
    h = hashlib.sha256(f"{list_id}\x00{recipient.lower()}\x00{period}".encode()).hexdigest()
    safe_period = re.sub(r"[^A-Za-z0-9-]", "", period) or "digest"
    return f"<{safe_period}.{h[:24]}@{domain}>"


@lru_cache(maxsize=64)
def list_id_header(list_name: str, list_id: str) -> str:
    """``List-Id: Name <id>`` (RFC 2919); a name with specials is quoted."""
    name = header_text(list_name, limit=100)
    ident = re.sub(r"[^A-Za-z0-9.-]", "-", list_id).strip(".-") or "digest.invalid"
    if not name.isascii():
        return f"<{ident}>"  # a raw header must stay ASCII; the id alone is valid
    if not _LIST_ID_ATEXT.match(name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{ident}>" if name else f"<{ident}>"


def mailto_url(address: str, subject: str = "unsubscribe") -> str:
    """``mailto:`` URL for ``List-Unsubscribe`` and links; empty for a bad address."""
    try:
        box = mailbox(parseaddr(address)[1] or address)
    except ValueError:
        return ""
    if not box.ascii:
        return ""
    return f"mailto:{box.addr}?subject={subject}"


def _boundary(*bodies: str) -> str:
    # "=_" never occurs in quoted-printable output, so the boundary cannot collide with
    # a body; deriving it from the content keeps previews byte-for-byte reproducible.
    h = hashlib.sha256("\x00".join(bodies).encode("utf-8", "surrogatepass")).hexdigest()
    return f"=_nl_{h[:28]}"


@dataclass(frozen=True, slots=True)
class _Parts:
    headers: list[tuple[str, str]]  # (name, pre-encoded and pre-folded value)
    utf8: bool  # a non-ASCII address: the headers are raw UTF-8 (SMTPUTF8)


def _header_fields(
    *,
    sender: Mailbox,
    recipient: Mailbox,
    subject: str,
    date: datetime,
    message_id: str,
    list_name: str,
    list_id: str,
    unsubscribe_url: str,
    unsubscribe_mailto: str,
    reply_to: Mailbox | None,
) -> _Parts:
    """The top-level header fields, validated, in order; shared by both builders."""
    if date.tzinfo is None:
        raise RenderError("the Date header needs an aware datetime")
    if not _MSG_ID.match(message_id):
        raise RenderError(f"not a Message-ID: {message_id!r}")
    headers = [("From", sender.header("From")), ("To", recipient.header("To"))]
    if reply_to is not None:
        headers.append(("Reply-To", reply_to.header("Reply-To")))
    headers += [
        ("Subject", encode_header(header_text(subject, limit=200), "Subject")),
        ("Date", _date_header(date)),
        ("Message-ID", message_id),
        ("List-Id", list_id_header(list_name, list_id)),
    ]
    targets = [f"<{u}>" for u in (unsubscribe_url, unsubscribe_mailto) if u and u.isascii()]
    if any(not _TARGET.fullmatch(t) for t in targets):
        raise RenderError("an unsubscribe URL must be ASCII without spaces (percent-encode it)")
    if targets:
        headers.append(("List-Unsubscribe", ",\r\n ".join(targets)))
        if unsubscribe_url.startswith(("https://", "http://")):
            headers.append(("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
    headers.append(("Precedence", "bulk"))
    return _Parts(headers, utf8=not (recipient.ascii and sender.ascii))


def _normal_lines(text: str) -> str:
    """LF line ends and a final newline, as the ``email`` package writes a text part."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text if text.endswith("\n") else text + "\n"


_LAST_DATE: list[object] = [None, ""]


def _date_header(date: datetime) -> str:
    """``format_datetime``, once per datetime object (a batch shares one send moment)."""
    if _LAST_DATE[0] is not date:
        _LAST_DATE[:] = [date, format_datetime(date)]
    return str(_LAST_DATE[1])


def _raw(text: str) -> bytes:
    return _normal_lines(text).encode("utf-8", "surrogateescape")


def _raw_bodies(text: str, html: str) -> tuple[bytes, bytes, str]:
    """Both bodies as LF-terminated UTF-8, and the boundary, encoding each body once."""
    try:
        text_b, html_b = text.encode("utf-8"), html.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: each use has its own error handler
        return _raw(text), _raw(html), _boundary(text, html)
    h = hashlib.sha256(text_b)
    h.update(b"\x00")
    h.update(html_b)
    bodies = []
    for body, raw in ((text, text_b), (html, html_b)):
        if b"\r" in raw:
            raw = _raw(body)
        elif not raw.endswith(b"\n"):
            raw += b"\n"
        bodies.append(raw)
    return bodies[0], bodies[1], f"=_nl_{h.hexdigest()[:28]}"


def _body(
    raw: bytes, body_8bit: bool, encoded: Sequence[bytes] | None
) -> tuple[str, Sequence[bytes]]:
    """(Content-Transfer-Encoding, CRLF-terminated body bytes as pieces) for one part.

    ``raw`` is UTF-8 with LF line ends, the last one included. 8bit keeps it as is (a
    server offering 8BITMIME takes it; ``SmtpSender`` re-encodes for one that does not)
    unless a line would reach RFC 5321's 998-byte limit; quoted-printable (lines of at
    most 76) is safe for any relay; ``encoded`` is that encoding when already made.
    """
    if body_8bit and max(map(len, raw.split(b"\n"))) < _MAX_8BIT_LINE:
        return ("7bit" if raw.isascii() else "8bit"), (raw.replace(b"\n", b"\r\n"),)
    return "quoted-printable", encoded if encoded is not None else (quoted_printable(raw),)


@dataclass(frozen=True, slots=True)
class Bodies:
    """The text and HTML parts made ahead (the renderer's filler makes them on the way).

    ``text`` and ``html``: the bodies' UTF-8 bytes, holding no CR and no lone surrogate;
    ``text_qp`` and ``html_qp``: their quoted-printable encodings as pieces (what
    :func:`newsletter.render.qp.quoted_printable` gives for the body with a final LF).
    """

    text: bytes
    html: bytes
    text_qp: Sequence[bytes]
    html_qp: Sequence[bytes]


def build_message(
    *,
    sender: Mailbox,
    recipient: Mailbox,
    subject: str,
    text: str,
    html: str,
    date: datetime,
    message_id: str,
    list_name: str,
    list_id: str,
    unsubscribe_url: str,
    unsubscribe_mailto: str = "",
    reply_to: Mailbox | None = None,
    body_8bit: bool = False,
) -> bytes:
    """The complete RFC 5322 message: text/plain first, then text/html, both UTF-8.

    Written out directly (the headers are encoded and folded by this module anyway):
    about fifty times faster than the ``email`` package, which
    :func:`reference_build_message` keeps as the yardstick the tests compare with.
    Lines end in CRLF, as SMTP wants them and mail clients read them.
    """
    parts = _header_fields(
        sender=sender,
        recipient=recipient,
        subject=subject,
        date=date,
        message_id=message_id,
        list_name=list_name,
        list_id=list_id,
        unsubscribe_url=unsubscribe_url,
        unsubscribe_mailto=unsubscribe_mailto,
        reply_to=reply_to,
    )
    text_raw, html_raw, boundary = _raw_bodies(text, html)
    bodies = ((text_raw, None), (html_raw, None))
    return _assemble(parts, recipient, boundary, bodies, body_8bit)


def build_message_from(
    bodies: Bodies,
    *,
    sender: Mailbox,
    recipient: Mailbox,
    subject: str,
    date: datetime,
    message_id: str,
    list_name: str,
    list_id: str,
    unsubscribe_url: str,
    unsubscribe_mailto: str = "",
    reply_to: Mailbox | None = None,
    body_8bit: bool = False,
) -> bytes:
    """:func:`build_message` of bodies made ahead: the same bytes, without encoding the
    bodies again or copying them more than once."""
    parts = _header_fields(
        sender=sender,
        recipient=recipient,
        subject=subject,
        date=date,
        message_id=message_id,
        list_name=list_name,
        list_id=list_id,
        unsubscribe_url=unsubscribe_url,
        unsubscribe_mailto=unsubscribe_mailto,
        reply_to=reply_to,
    )
    h = hashlib.sha256(bodies.text)  # as _boundary hashes the strings' UTF-8
    h.update(b"\x00")
    h.update(bodies.html)
    made = (
        (_with_lf(bodies.text) if body_8bit else b"", bodies.text_qp),
        (_with_lf(bodies.html) if body_8bit else b"", bodies.html_qp),
    )
    return _assemble(parts, recipient, f"=_nl_{h.hexdigest()[:28]}", made, body_8bit)


def _with_lf(raw: bytes) -> bytes:
    return raw if raw.endswith(b"\n") else raw + b"\n"


def _assemble(
    parts: _Parts,
    recipient: Mailbox,
    boundary: str,
    bodies: tuple[tuple[bytes, Sequence[bytes] | None], tuple[bytes, Sequence[bytes] | None]],
    body_8bit: bool,
) -> bytes:
    head = "".join(f"{name}: {value}\r\n" for name, value in parts.headers)
    head += (
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n\r\n'
    )
    try:
        out = [head.encode("utf-8" if parts.utf8 else "ascii")]
    except UnicodeError as e:
        raise RenderError(f"cannot serialise the message to {recipient.addr}: {e}") from e
    for subtype, (raw, encoded) in zip(("plain", "html"), bodies, strict=True):
        cte, data = _body(raw, body_8bit, encoded)
        out.append(
            f"--{boundary}\r\n"
            f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
            f"Content-Transfer-Encoding: {cte}\r\n\r\n".encode("ascii")
        )
        out.extend(data)
        out.append(b"\r\n")
    out.append(f"--{boundary}--\r\n".encode("ascii"))
    return b"".join(out)


def reference_build_message(
    *,
    sender: Mailbox,
    recipient: Mailbox,
    subject: str,
    text: str,
    html: str,
    date: datetime,
    message_id: str,
    list_name: str,
    list_id: str,
    unsubscribe_url: str,
    unsubscribe_mailto: str = "",
    reply_to: Mailbox | None = None,
    body_8bit: bool = False,
) -> bytes:
    """:func:`build_message` through the standard library's ``email`` package.

    The obvious way, kept as the reference the fast builder is tested against and
    that the benchmark's reference pipeline uses.
    """
    parts = _header_fields(
        sender=sender,
        recipient=recipient,
        subject=subject,
        date=date,
        message_id=message_id,
        list_name=list_name,
        list_id=list_id,
        unsubscribe_url=unsubscribe_url,
        unsubscribe_mailto=unsubscribe_mailto,
        reply_to=reply_to,
    )
    pol = _POLICY_UTF8 if parts.utf8 else _POLICY
    msg = EmailMessage(policy=pol)
    for name, value in parts.headers:
        msg.set_raw(name, value)
    cte = "8bit" if body_8bit else "quoted-printable"
    msg.set_content(text, subtype="plain", charset="utf-8", cte=cte)
    msg.add_alternative(html, subtype="html", charset="utf-8", cte=cte)
    for part in msg.iter_parts():
        del part["MIME-Version"]  # add_alternative copies it into the first part
    msg.set_boundary(_boundary(text, html))
    try:
        return msg.as_bytes(policy=pol)
    except (ValueError, UnicodeError) as e:
        raise RenderError(f"cannot serialise the message to {recipient.addr}: {e}") from e
