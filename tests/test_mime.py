"""The MIME message: structure, headers, encodings, and header injection."""

from __future__ import annotations

import binascii
import email
import email.policy
import hashlib
import re
from datetime import UTC, datetime
from email.message import EmailMessage

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from newsletter.errors import ConfigError
from newsletter.render import RenderedEmail, Renderer, qp
from newsletter.render.headers import Headers, header_text, list_id_header, mailbox, message_id_for
from newsletter.render.mime import (
    Bodies,
    build_message,
    build_message_from,
    reference_build_message,
)
from tests.support.digests import article, match, profile, request, sample_matches, settings

LONG_UNSUB = "https://news.example.org/unsubscribe/" + "A" * 90
# The boundary of the messages built below (Message-ID "<2026-11-22.abc@example.org>").
_SEED = "=_nl_" + hashlib.sha256(b"<2026-11-22.abc@example.org>").hexdigest()[:28]


def _parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def _email(r: Renderer | None = None, **kw: object) -> RenderedEmail:
    r = r or Renderer(settings(unsubscribe_mailto="unsubscribe@example.org"))
    p = kw.pop("p", None) or profile()
    ms = kw.pop("ms", None) or sample_matches(3)
    out = r.render(request(p, ms, **kw))  # type: ignore[arg-type]
    assert out is not None
    return out


def test_multipart_alternative_text_first_then_html() -> None:
    e = _email()
    msg = _parse(e.data)
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in parts)
    assert parts[0].get_content().replace("\r\n", "\n") == e.text
    assert parts[1].get_content().replace("\r\n", "\n") == e.html
    assert msg.get_body(("html",)) is parts[1]
    assert msg["MIME-Version"] == "1.0"
    assert all("MIME-Version" not in p for p in parts)


def test_headers() -> None:
    e = _email(
        Renderer(
            settings(
                unsubscribe_mailto="unsubscribe@example.org",
                reply_to="Ops <ops@example.org>",
            )
        ),
        sent_at=datetime(2026, 11, 22, 6, 30, tzinfo=UTC),
    )
    msg = _parse(e.data)
    assert msg["From"] == "Research Digest <digest@example.org>"
    assert msg["To"] == "Ada Lovelace <ada@example.org>"
    assert msg["Reply-To"] == "Ops <ops@example.org>"
    assert msg["Subject"] == e.subject
    assert msg["Date"] == "Sun, 22 Nov 2026 06:30:00 +0000"
    assert msg["Message-ID"] == e.message_id
    assert re.fullmatch(r"<2026-11-22\.[0-9a-f]{24}@example\.org>", e.message_id)
    assert msg["List-Id"] == "Research Digest <digest.example.org>"
    assert msg["List-Unsubscribe"] == (
        "<https://news.example.org/unsubscribe/tok123>, "
        "<mailto:unsubscribe@example.org?subject=unsubscribe>"
    )
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["Precedence"] == "bulk"
    assert "Auto-Submitted" not in msg
    assert e.sender == "digest@example.org" and e.recipient == "ada@example.org"


def test_without_mailto_or_reply_to() -> None:
    msg = _parse(_email(Renderer(settings())).data)
    assert msg["List-Unsubscribe"] == "<https://news.example.org/unsubscribe/tok123>"
    assert "Reply-To" not in msg


def test_date_defaults_to_the_scheduled_send_time_in_the_subscribers_zone() -> None:
    p = profile(timezone="Europe/Berlin")
    msg = _parse(_email(Renderer(settings(send_time="07:30")), p=p).data)
    assert msg["Date"] == "Sun, 22 Nov 2026 07:30:00 +0100"


def test_message_id_is_unique_per_subscriber_and_period() -> None:
    ids = {
        message_id_for(list_id="l", recipient=r, period=p, domain="example.org")
        for r in ("a@x.org", "b@x.org")
        for p in ("2026-11-22", "2026-11-23", "2026-W47")
    }
    assert len(ids) == 6
    assert message_id_for(list_id="l", recipient="A@x.org", period="2026-11-22", domain="d") == (
        message_id_for(list_id="l", recipient="a@x.org", period="2026-11-22", domain="d")
    )
    e = _email(message_id="<given@example.org>")
    assert _parse(e.data)["Message-ID"] == "<given@example.org>"


def test_non_ascii_subject_and_name_are_rfc2047_encoded() -> None:
    p = profile(name="Zoë Ñúñez", keywords=["Schrödinger bridges"])
    a = article("Schrödinger bridges, fast")
    e = _email(p=p, ms=[match(a, "Schrödinger bridges")])
    raw = e.data.split(b"\r\n\r\n", 1)[0]
    assert raw.isascii()
    assert b"=?utf-8?" in raw
    msg = _parse(e.data)
    assert msg["Subject"] == "Your entries for Sun 22 Nov: 1 new on Schrödinger bridges"
    assert msg["To"].addresses[0].display_name == "Zoë Ñúñez"


def test_names_with_specials_are_quoted() -> None:
    p = profile(name='Ada "the Countess" Lovelace, FRS')
    msg = _parse(_email(p=p).data)
    (addr,) = msg["To"].addresses
    assert addr.display_name == 'Ada "the Countess" Lovelace, FRS'
    assert addr.addr_spec == "ada@example.org"


def test_international_addresses() -> None:
    e = _email(p=profile(email="ada@bücher.example"))
    assert e.recipient == "ada@xn--bcher-kva.example"
    assert _parse(e.data)["To"].addresses[0].domain == "xn--bcher-kva.example"
    utf8 = _email(p=profile(email="zoë@example.org"))
    assert "zoë@example.org".encode() in utf8.data  # SMTPUTF8: the address stays as is
    assert str(_parse(utf8.data)["To"]) == "Ada Lovelace <zoë@example.org>"


def test_long_unsubscribe_url_is_never_encoded() -> None:
    e = _email(unsubscribe_url=LONG_UNSUB)
    head = e.data.split(b"\r\n\r\n", 1)[0].decode("ascii")
    assert f"List-Unsubscribe: <{LONG_UNSUB}>," in head
    assert _parse(e.data)["List-Unsubscribe"].startswith(f"<{LONG_UNSUB}>")


def test_lines_are_short_and_crlf() -> None:
    e = _email(ms=sample_matches(5))
    lines = e.data.split(b"\r\n")
    assert max(len(line) for line in lines) <= 998
    body = e.data.split(b"\r\n\r\n", 1)[1]
    assert body.isascii()  # quoted-printable: safe through any relay
    assert max(len(line) for line in body.split(b"\r\n")) <= 78
    assert b"\n" not in e.data.replace(b"\r\n", b"")


HOSTILE = [
    "Eve\r\nBcc: victim@example.org",
    "Eve\nBcc: victim@example.org",
    "Eve\rBcc: victim@example.org",
    "Eve\u2028Bcc: victim@example.org",
    "Eve\x00\x0bBcc: victim@example.org",
    "=?utf-8?q?Eve=0D=0ABcc=3A_victim=40example.org?=",
]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_header_injection_is_impossible(hostile: str) -> None:
    title = f"RLHF {hostile}"
    r = Renderer(settings())
    p = profile(name=hostile, keywords=["RLHF", hostile])
    ms = [match(article(title, "About RLHF."), "RLHF", hostile)]
    e = r.render(request(p, ms))
    assert e is not None
    assert "Bcc" in e.subject  # the hostile keyword reached the subject, flattened
    msg = _parse(e.data)
    assert "Bcc" not in msg and "bcc" not in {k.lower() for k in msg}
    head = e.data.split(b"\r\n\r\n", 1)[0]
    assert not re.search(rb"\r\n(?i:bcc):", head)
    assert [k for k in msg if k.lower() == "to"] == ["To"]
    # The hostile text is still shown, flattened to one line.
    assert "victim@example.org" in str(msg["To"]) or "Bcc" in str(msg["To"])


def test_subject_from_a_hostile_title_in_a_custom_template(tmp_path: object) -> None:
    from pathlib import Path

    d = Path(str(tmp_path))
    (d / "subject.txt").write_text("{{ cards[0].title_text }} / {{ preheader }}")
    r = Renderer(settings(templates_dir=d))
    a = article("Big news\r\nBcc: victim@example.org\r\n\r\n<html>", "About RLHF.")
    e = r.render(request(profile(), [match(a, "RLHF")]))
    assert e is not None
    msg = _parse(e.data)
    assert "Bcc" not in msg
    assert msg["Subject"].startswith("Big news Bcc: victim@example.org <html>")
    assert msg.get_content_type() == "multipart/alternative"


def test_header_text_and_list_id() -> None:
    assert header_text("a\r\nb\tc\x00d\u2029e  f") == "a b c d e f"
    assert header_text("x" * 300, limit=50).endswith("…")
    assert list_id_header("Research Digest", "digest.example.org") == (
        "Research Digest <digest.example.org>"
    )
    assert (
        list_id_header('Weird "List", Inc.', "l.example") == '"Weird \\"List\\", Inc." <l.example>'
    )
    assert list_id_header("Liste für Sie", "l.example") == "<l.example>"
    with pytest.raises(ValueError):
        mailbox("not an address")
    with pytest.raises(ValueError):
        mailbox("a@b\r\nBcc: c@d")


def test_bad_from_address_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"newsletter\.from"):
        Renderer(settings(from_addr="nobody"))


def test_bytes_are_reproducible() -> None:
    ms = sample_matches(3)
    assert _email(ms=ms).data == _email(ms=ms).data


# -- the fast builder against the email package -----------------------------------------

_SHAPES: list[tuple[str, dict[str, object]]] = [
    ("ascii", {}),
    ("non-ascii name and subject", {"name": "Zoë Ñúñez", "subject": "Schrödinger — “RLHF” ▲"}),
    ("long lines", {"text": ("word " * 400).strip() + "\n", "html": "<p>" + "x" * 3000 + "</p>"}),
    ("empty digest", {"text": "", "html": ""}),
    ("no final newline, CR LF and trailing spaces", {"text": "a  \r\nb\rc\t", "html": "<p>é</p>"}),
    (
        "equals, encoded-word lookalike",
        {"subject": "a =?utf-8?q?x?= b", "text": "x=3D\n", "html": "a=b"},
    ),
    ("international address", {"addr": "zoë@exämple.org", "name": "Zoë"}),
    # A body holding the very boundary line the message would get (the Message-ID is
    # guessable): the boundary moves on, twice for the second.
    ("boundary in the text", {"text": f"--{_SEED}\nx\n", "html": "<p>x</p>"}),
    ("boundaries in the html", {"text": "x", "html": f"<p>--{_SEED}</p>\n--{_SEED}_1--\n"}),
    ("reply-to and mailto", {"reply_to": "Ops <ops@example.org>", "mailto": "u@example.org"}),
]


def test_a_body_never_holds_the_boundary() -> None:
    for name, shape in _SHAPES:
        if _SEED in str(shape.get("text", "")) + str(shape.get("html", "")):
            for data in _both(shape, body_8bit=True):
                boundary = _parse(data).get_boundary()
                assert boundary and boundary.startswith(_SEED + "_"), name
                assert data.count(f"--{boundary}".encode()) == 3  # two parts and the close


def _both(shape: dict[str, object], *, body_8bit: bool) -> tuple[bytes, bytes]:
    reply_to = shape.get("reply_to")
    headers = Headers(
        sender=mailbox("digest@example.org", "Research Digest"),
        recipient=mailbox(str(shape.get("addr", "ada@example.org")), str(shape.get("name", ""))),
        subject=str(shape.get("subject", "Your entries for Sun 22 Nov: 3 new on RLHF")),
        date=datetime(2026, 11, 22, 6, 30, tzinfo=UTC),
        message_id="<2026-11-22.abc@example.org>",
        list_name="Research Digest",
        list_id="digest.example.org",
        unsubscribe_url=LONG_UNSUB,
        unsubscribe_mailto=f"mailto:{shape['mailto']}" if "mailto" in shape else "",
        reply_to=mailbox(str(reply_to)[6:-1], "Ops") if reply_to else None,
    )
    text = str(shape.get("text", "Hi Ada,\n\n1. Bilevel optimization ≥ RLHF\n"))
    html = str(shape.get("html", '<html><body><p style="color: red">Hi Ada ✓</p></body></html>\n'))
    return (
        build_message(headers, text, html, body_8bit=body_8bit),
        reference_build_message(headers, text, html, body_8bit=body_8bit),
    )


def _structure(
    data: bytes,
) -> tuple[list[tuple[str, str]], list[tuple[list[tuple[str, str]], str]]]:
    msg = _parse(data)
    parts = [
        ([(k, str(v)) for k, v in p.items() if k != "Content-Transfer-Encoding"], p.get_content())
        for p in msg.iter_parts()
    ]
    return [(k, str(v)) for k, v in msg.items()], parts


@pytest.mark.parametrize("body_8bit", [False, True], ids=["qp", "8bit"])
@pytest.mark.parametrize("shape", [s for _, s in _SHAPES], ids=[n for n, _ in _SHAPES])
def test_fast_builder_parses_like_the_reference(shape: dict[str, object], body_8bit: bool) -> None:
    fast, ref = _both(shape, body_8bit=body_8bit)
    fast_headers, fast_parts = _structure(fast)
    ref_headers, ref_parts = _structure(ref)
    assert fast_headers == ref_headers
    assert fast_parts == ref_parts
    if "text" in shape:  # the bodies come back as written, lines ending in one newline
        text = str(shape["text"]).replace("\r\n", "\n").replace("\r", "\n")
        want = [t if t.endswith("\n") else t + "\n" for t in (text, str(shape["html"]))]
        assert [p[1].replace("\r\n", "\n") for p in fast_parts] == want
    assert not _parse(fast).defects and all(not p.defects for p in _parse(fast).iter_parts())
    lines = fast.split(b"\r\n")
    assert b"\n" not in fast.replace(b"\r\n", b"") and b"\r" not in fast.replace(b"\r\n", b"")
    assert max(map(len, lines)) < 998
    if not body_8bit:
        assert fast.isascii() or not mailbox(str(shape.get("addr", "a@b.c"))).ascii
        assert all(len(line) <= 78 for line in lines[lines.index(b"") :])


def test_8bit_bodies_stay_utf8_unless_a_line_is_too_long() -> None:
    fast, _ = _both({"text": "Zoë\n", "html": "<p>" + "é" * 600 + "</p>"}, body_8bit=True)
    parts = list(_parse(fast).iter_parts())
    assert [p["Content-Transfer-Encoding"] for p in parts] == ["8bit", "quoted-printable"]
    assert "Zoë".encode() in fast
    ascii_only, _ = _both({"text": "plain\n", "html": "<p>plain</p>"}, body_8bit=True)
    assert [p["Content-Transfer-Encoding"] for p in _parse(ascii_only).iter_parts()] == [
        "7bit",
        "7bit",
    ]


# -- quoted-printable a line at a time ------------------------------------------------------

# Bytes that exercise every rule: escapes ("=", non-ASCII, controls), trailing and inner
# whitespace, a lone ".", and runs long enough to fold.
_QP_BYTES = st.lists(
    st.sampled_from(
        [
            *(b"a", b" ", b"\t", b"=", b".", b"<p>", b"x" * 20, b"\xc3\xa9", b"\xe2\x86\x92"),
            *(b"\x00", b"\x01", b"\x7f", b"\xff", b"=3D", b"\n"),
        ]
    ),
    max_size=120,
).map(b"".join)


def _binascii(raw: bytes) -> bytes:
    return binascii.b2a_qp(raw, quotetabs=False, istext=True, header=False).replace(b"\n", b"\r\n")


@given(_QP_BYTES)
@example(b"x" * 73 + b"=")  # an escape that would end past the 76th column
@example(b"x" * 75 + b" ")  # trailing whitespace at the fold
@example(b".")
def test_quoted_printable_is_binascii_line_by_line(raw: bytes) -> None:
    assert qp.quoted_printable(raw) == _binascii(raw)
    assert qp.quoted_printable(raw + b"\n") == _binascii(raw + b"\n")
    for line in raw.split(b"\n"):
        assert qp.qp_line(line) == _binascii(line + b"\n")[:-2]


@given(
    st.text(alphabet=st.sampled_from(list("ab =\t.<>é→…\x01")), max_size=300),
    st.integers(min_value=0, max_value=300),
    st.integers(min_value=0, max_value=300),
)
def test_encoded_line_with_escaped_affixes(line: str, i: int, j: int) -> None:
    # What the filler passes: the static start and end of the line, escaped once.
    i, j = min(i, len(line)), min(j, len(line) - min(i, len(line)))
    pre, post = line[:i], line[len(line) - j :]
    got = qp.encoded_line(
        line, qp.escaped(pre.encode()), len(pre), qp.escaped(post.encode()), len(post)
    )
    assert got == _binascii(line.encode() + b"\n")
    assert qp.encoded_line("\udc80x") == qp.BAD_LINE  # not UTF-8: left to the builder


@pytest.mark.parametrize("body_8bit", [False, True], ids=["qp", "8bit"])
@pytest.mark.parametrize("shape", [s for _, s in _SHAPES], ids=[n for n, _ in _SHAPES])
def test_bodies_made_ahead_give_the_same_message(shape: dict[str, object], body_8bit: bool) -> None:
    text = str(shape.get("text", "Hi Ada,\n\n1. Bilevel optimization ≥ RLHF\n"))
    html = str(shape.get("html", "<p>Hi ✓</p>\n"))
    if "\r" in text + html:
        return  # (bodies with CR are the builder's own to normalise)
    headers = Headers(
        sender=mailbox("digest@example.org", "Research Digest"),
        recipient=mailbox(str(shape.get("addr", "ada@example.org")), "Ada"),
        subject="Your entries",
        date=datetime(2026, 11, 22, 6, 30, tzinfo=UTC),
        message_id="<2026-11-22.abc@example.org>",
        list_name="Research Digest",
        list_id="digest.example.org",
        unsubscribe_url=LONG_UNSUB,
    )
    bodies = Bodies(
        text.encode(),
        html.encode(),
        [qp.quoted_printable((text if text.endswith("\n") else text + "\n").encode())],
        [qp.quoted_printable((html if html.endswith("\n") else html + "\n").encode())],
    )
    made = build_message_from(headers, bodies, body_8bit=body_8bit)
    assert made == build_message(headers, text, html, body_8bit=body_8bit)
