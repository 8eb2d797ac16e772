"""A message's header fields: addresses, subject and list headers, cleaned and folded. Pure.

Values that reach a header are cleaned first (no CR, LF or other control character
survives), so a hostile feed title or subscriber name can never add a header.
``List-Unsubscribe`` and ``List-Id`` are written pre-folded: the generic folder would turn
a long URL into an RFC 2047 encoded-word, which no mail provider would follow. The bodies
and the finished bytes are :mod:`newsletter.render.mime`'s.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.utils import format_datetime, parseaddr
from functools import lru_cache

from newsletter.errors import ConfigError, RenderError

_LIST_ID_ATEXT = re.compile(r"^[A-Za-z0-9 !#$%&'*+/=?^_`{|}~.-]*$")
_ATOMS = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]+$")
_MSG_ID = re.compile(r"^<[\x21-\x3b\x3d\x3f-\x7e]+@[\x21-\x3b\x3d\x3f-\x7e]+>$")
_DOT_ATOM = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+$")
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


@dataclass(frozen=True, slots=True)
class Headers:
    """What one message's header fields are made of; every MIME builder takes one."""

    sender: Mailbox
    recipient: Mailbox
    subject: str
    date: datetime
    message_id: str
    list_name: str
    list_id: str
    unsubscribe_url: str
    unsubscribe_mailto: str = ""
    reply_to: Mailbox | None = None


@dataclass(frozen=True, slots=True)
class HeaderFields:
    fields: list[tuple[str, str]]  # (name, pre-encoded and pre-folded value), in order
    utf8: bool  # a non-ASCII address: the headers are raw UTF-8 (SMTPUTF8)


def header_fields(h: Headers) -> HeaderFields:
    """The top-level header fields of ``h``, validated, in order."""
    if h.date.tzinfo is None:
        raise RenderError("the Date header needs an aware datetime")
    if not _MSG_ID.match(h.message_id):
        raise RenderError(f"not a Message-ID: {h.message_id!r}")
    fields = [("From", h.sender.header("From")), ("To", h.recipient.header("To"))]
    if h.reply_to is not None:
        fields.append(("Reply-To", h.reply_to.header("Reply-To")))
    fields += [
        ("Subject", encode_header(header_text(h.subject, limit=200), "Subject")),
        ("Date", _date_header(h.date)),
        ("Message-ID", h.message_id),
        ("List-Id", list_id_header(h.list_name, h.list_id)),
    ]
    url, mailto = h.unsubscribe_url, h.unsubscribe_mailto
    targets = [f"<{u}>" for u in (url, mailto) if u and u.isascii()]
    if any(not _TARGET.fullmatch(t) for t in targets):
        raise RenderError("an unsubscribe URL must be ASCII without spaces (percent-encode it)")
    if targets:
        fields.append(("List-Unsubscribe", ",\r\n ".join(targets)))
        if url.startswith(("https://", "http://")):
            fields.append(("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
    fields.append(("Precedence", "bulk"))
    return HeaderFields(fields, utf8=not (h.recipient.ascii and h.sender.ascii))


_LAST_DATE: list[object] = [None, ""]


def _date_header(date: datetime) -> str:
    """``format_datetime``, once per datetime object (a batch shares one send moment)."""
    if _LAST_DATE[0] is not date:
        _LAST_DATE[:] = [date, format_datetime(date)]
    return str(_LAST_DATE[1])
