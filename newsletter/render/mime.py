"""The finished message: ``multipart/alternative`` bytes of two bodies and the headers. Pure.

Written out directly, byte by byte (the ``email`` package, kept as the reference
builder, costs milliseconds per message). The header fields are made, cleaned and folded
by :mod:`newsletter.render.headers`; this module adds the bodies, each 8bit or
quoted-printable, and the MIME structure around them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email import policy as email_policy
from email.message import EmailMessage
from itertools import compress

from newsletter.errors import RenderError
from newsletter.render.headers import HeaderFields, Headers, Mailbox, header_fields
from newsletter.render.qp import quoted_printable

# Body encoding keeps every line short and 7-bit (safe for any relay); the message is
# serialised with the source of pre-folded headers left alone.
_POLICY = email_policy.SMTP.clone(refold_source="none")
_POLICY_UTF8 = email_policy.SMTPUTF8.clone(refold_source="none")
_MAX_8BIT_LINE = 998  # RFC 5321: a line of at most 998 octets before CRLF
# HTML lines are cut to at most this many bytes (short_lines), so the body can go 8bit.
MAX_HTML_LINE = 990
# A space between two attributes of a tag: after a value's closing quote, before the
# next name and its opening quote (a raw '"' is never inside a double-quoted value).
_ATTR_NAME = re.compile(rb'[A-Za-z_:][-\w:.]*="')
# Elements whose content a space-to-newline change could alter (or does not parse as text).
_RAW_TEXT = re.compile(rb"<(?:style|script|pre|textarea|title)\b", re.IGNORECASE)


def short_lines(doc: bytes) -> bytes:
    """``doc`` (HTML, UTF-8) with every line longer than :data:`MAX_HTML_LINE` bytes cut at
    spaces that can end a line without changing what the document means; ``doc`` itself
    when no line is that long.

    A space is cut (it becomes the LF) only where HTML treats a newline as it treats a
    space: in text between tags (none of the templates' elements preserve white space)
    or between two attributes inside a tag — never inside an attribute value or a
    comment, nor on a line holding a ``<style>``, ``<pre>``, ``<script>``,
    ``<textarea>`` or ``<title>``. Where no such space is within reach, the line is
    cut at the next one and stays long (the MIME builder then sends that body
    quoted-printable). Both render paths call
    this on their finished HTML, so they stay byte-identical.
    """
    return cut_lines(doc)[0]


def cut_lines(doc: bytes) -> tuple[bytes, int]:
    """:func:`short_lines` of ``doc``, and the length of its longest line then."""
    lines = doc.split(b"\n")
    lengths = list(map(len, lines))
    longest = max(lengths)
    if longest <= MAX_HTML_LINE:
        return doc, longest
    # Only the long lines are visited (found in C); the rest keep their lengths.
    longest = max(filter(MAX_HTML_LINE.__ge__, lengths), default=0)
    for i in compress(range(len(lines)), map(MAX_HTML_LINE.__lt__, lengths)):
        pieces = _cut(lines[i])
        lines[i] = b"\n".join(pieces)
        longest = max(longest, *map(len, pieces))
    return b"\n".join(lines), longest


def _cut(line: bytes) -> list[bytes]:
    text_ok = _RAW_TEXT.search(line) is None

    def safe(p: int) -> bool:
        lt, gt = line.rfind(b"<", 0, p), line.rfind(b">", 0, p)
        if lt <= gt:  # in text between tags (or before the first), unless in a comment
            return text_ok and line.rfind(b"<!--", 0, p) <= line.rfind(b"-->", 0, p)
        return line[p - 1] == 34 and _ATTR_NAME.match(line, p + 1) is not None  # '" name="'

    pieces: list[bytes] = []
    start = 0
    while len(line) - start > MAX_HTML_LINE:
        end = start + MAX_HTML_LINE + 1  # the space itself may sit at the limit
        cut = line.rfind(b" ", start + 1, end)
        while cut >= 0 and not safe(cut):
            cut = line.rfind(b" ", start + 1, cut)
        if cut < 0:  # nothing safe within reach: the first safe space beyond (a long line)
            cut = line.find(b" ", end)
            while cut >= 0 and not safe(cut):
                cut = line.find(b" ", cut + 1)
            if cut < 0:
                break  # nowhere safe: the rest stays as it is
        pieces.append(line[start:cut])
        start = cut + 1
    pieces.append(line[start:])
    return pieces


def _boundary(message_id: str, *bodies: bytes) -> str:
    """The MIME boundary: from the Message-ID, which is unique per message and stable
    (previews stay byte-for-byte reproducible) and short to hash, unlike the bodies.

    "=_" never occurs in quoted-printable output, but an 8bit body could hold a line
    made to look like the boundary (the Message-ID can be guessed), so one that any
    body holds gets a counter until none does.
    """
    seed = "=_nl_" + hashlib.sha256(message_id.encode("utf-8", "surrogatepass")).hexdigest()[:28]
    boundary, n = seed, 0
    while any(b"--" + boundary.encode("ascii") in body for body in bodies):
        n += 1
        boundary = f"{seed}_{n}"
    return boundary


def _normal_lines(text: str) -> str:
    """LF line ends and a final newline, as the ``email`` package writes a text part."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text if text.endswith("\n") else text + "\n"


def _raw(text: str) -> bytes:
    return _normal_lines(text).encode("utf-8", "surrogateescape")


def _raw_bodies(text: str, html: str) -> tuple[bytes, bytes]:
    """Both bodies as LF-terminated UTF-8, encoding each body once."""
    try:
        text_b, html_b = text.encode("utf-8"), html.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: each use has its own error handler
        return _raw(text), _raw(html)
    bodies = []
    for body, raw in ((text, text_b), (html, html_b)):
        if b"\r" in raw:
            raw = _raw(body)
        elif not raw.endswith(b"\n"):
            raw += b"\n"
        bodies.append(raw)
    return bodies[0], bodies[1]


def _body(
    raw: bytes, body_8bit: bool, encoded: Sequence[bytes] | None, longest: int | None = None
) -> tuple[str, Sequence[bytes]]:
    """(Content-Transfer-Encoding, CRLF-terminated body bytes as pieces) for one part.

    ``raw`` is UTF-8 with LF line ends, the last one included. 8bit keeps it as is (a
    server offering 8BITMIME takes it; ``SmtpSender`` re-encodes for one that does not)
    unless a line would reach RFC 5321's 998-byte limit; quoted-printable (lines of at
    most 76) is safe for any relay; ``encoded`` is that encoding when already made,
    ``longest`` the length of the longest line when known.
    """
    if (
        body_8bit
        and (longest if longest is not None else max(map(len, raw.split(b"\n")))) < _MAX_8BIT_LINE
    ):
        return ("7bit" if raw.isascii() else "8bit"), (raw.replace(b"\n", b"\r\n"),)
    return "quoted-printable", encoded if encoded is not None else (quoted_printable(raw),)


@dataclass(frozen=True, slots=True)
class Bodies:
    """The text and HTML parts made ahead (the renderer's filler makes them on the way).

    ``text`` and ``html``: the bodies' UTF-8 bytes, holding no CR and no lone surrogate;
    ``text_qp`` and ``html_qp``: their quoted-printable encodings as pieces (what
    :func:`newsletter.render.qp.quoted_printable` gives for the body with a final LF),
    or None when not made (the builder encodes that body if it must).
    """

    text: bytes
    html: bytes
    text_qp: Sequence[bytes] | None
    html_qp: Sequence[bytes] | None
    html_longest: int | None = None  # bytes in its longest line, when known


def build_message(headers: Headers, text: str, html: str, *, body_8bit: bool = False) -> bytes:
    """The complete RFC 5322 message: text/plain first, then text/html, both UTF-8.

    About fifty times faster than the ``email`` package, which
    :func:`reference_build_message` keeps as the yardstick the tests compare with.
    Lines end in CRLF, as SMTP wants them and mail clients read them.
    """
    fields = header_fields(headers)
    text_raw, html_raw = _raw_bodies(text, html)
    boundary = _boundary(headers.message_id, text_raw, html_raw)
    bodies = ((text_raw, None, None), (html_raw, None, None))
    return _assemble(fields, headers.recipient, boundary, bodies, body_8bit)


def build_message_from(headers: Headers, bodies: Bodies, *, body_8bit: bool = False) -> bytes:
    """:func:`build_message` of bodies made ahead: the same bytes, without encoding the
    bodies again or copying them more than once."""
    fields = header_fields(headers)
    made = (
        (_with_lf(bodies.text), bodies.text_qp, None),
        (_with_lf(bodies.html), bodies.html_qp, bodies.html_longest),
    )
    boundary = _boundary(headers.message_id, bodies.text, bodies.html)
    return _assemble(fields, headers.recipient, boundary, made, body_8bit)


# A body for _assemble: its bytes (LF line ends), its quoted-printable pieces if made,
# the length of its longest line if known.
_Made = tuple[bytes, Sequence[bytes] | None, int | None]


def _with_lf(raw: bytes) -> bytes:
    return raw if raw.endswith(b"\n") else raw + b"\n"


def _assemble(
    parts: HeaderFields,
    recipient: Mailbox,
    boundary: str,
    bodies: tuple[_Made, _Made],
    body_8bit: bool,
) -> bytes:
    head = "".join(f"{name}: {value}\r\n" for name, value in parts.fields)
    head += (
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n\r\n'
    )
    try:
        out = [head.encode("utf-8" if parts.utf8 else "ascii")]
    except UnicodeError as e:
        raise RenderError(f"cannot serialise the message to {recipient.addr}: {e}") from e
    for subtype, (raw, encoded, longest) in zip(("plain", "html"), bodies, strict=True):
        cte, data = _body(raw, body_8bit, encoded, longest)
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
    headers: Headers, text: str, html: str, *, body_8bit: bool = False
) -> bytes:
    """:func:`build_message` through the standard library's ``email`` package.

    The obvious way, kept as the reference the fast builder is tested against and
    that the benchmark's reference pipeline uses.
    """
    parts = header_fields(headers)
    recipient = headers.recipient
    pol = _POLICY_UTF8 if parts.utf8 else _POLICY
    msg = EmailMessage(policy=pol)
    for name, value in parts.fields:
        msg.set_raw(name, value)
    cte = "8bit" if body_8bit else "quoted-printable"
    msg.set_content(text, subtype="plain", charset="utf-8", cte=cte)
    msg.add_alternative(html, subtype="html", charset="utf-8", cte=cte)
    for part in msg.iter_parts():
        del part["MIME-Version"]  # add_alternative copies it into the first part
    msg.set_boundary(_boundary(headers.message_id, *_raw_bodies(text, html)))
    try:
        return msg.as_bytes(policy=pol)
    except (ValueError, UnicodeError) as e:
        raise RenderError(f"cannot serialise the message to {recipient.addr}: {e}") from e
