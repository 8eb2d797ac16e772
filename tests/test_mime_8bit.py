"""8bit bodies: HTML lines cut under 998 bytes where it changes nothing, and the same
message as 8bit or quoted-printable.

A send composes 8bit bodies (``Composer(body_8bit=True)``); the SMTP sender re-encodes
them as quoted-printable for a server without 8BITMIME and the preview sender always,
giving the very bytes a quoted-printable build gives. Both render paths cut lines the
same way, so they stay byte-identical; a headless Chromium shows the cut page pixel for
pixel as the uncut one.
"""

from __future__ import annotations

import email
import email.policy
from dataclasses import replace
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from lxml import html as lxml_html

from newsletter.config import settings_from_mapping
from newsletter.delivery import OutgoingMessage, PreviewSender
from newsletter.delivery.smtp import SmtpSender, quoted_printable_bodies
from newsletter.domain import Match
from newsletter.render import Renderer
from newsletter.render.mime import MAX_HTML_LINE, short_lines
from tests.support.digests import canonical_html, match, profile, request, sample_matches, settings
from tests.support.smtp import RecordingHandler, SmtpTestServer, start_smtp_server

if TYPE_CHECKING:
    from selenium.webdriver.chrome.webdriver import WebDriver


def _parts(data: bytes) -> list[EmailMessage]:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return list(msg.iter_parts())  # type: ignore[arg-type]


def _ctes(data: bytes) -> list[str]:
    return [str(p["Content-Transfer-Encoding"]) for p in _parts(data)]


def _decoded(data: bytes) -> list[str]:
    return [p.get_content() for p in _parts(data)]


def _renderers() -> tuple[Renderer, Renderer]:
    qp, eight = Renderer(settings()), Renderer(settings())
    eight.body_8bit = True
    return qp, eight


def _requests() -> list[object]:
    ms = sample_matches(6)
    long_abstract = " ".join(["reward models and preference data"] * 60)  # one 2 KB line
    return [
        request(profile(), ms),
        request(profile(), [match(ms[0].article, "RLHF")]),
        request(profile("chloé@exämple.org", "Chloé"), ms[:2]),
        request(profile(), [_with_summary(ms[1], long_abstract), *ms[2:4]]),
    ]


def _with_summary(m: Match, summary: str) -> Match:
    return replace(m, article=replace(m.article, summary=summary))


# -- cutting lines ------------------------------------------------------------------


def _canonical(doc: bytes) -> list[tuple[str, ...]]:
    """Tags, attributes and text with white space squashed: what the cut may not change."""
    out: list[tuple[str, ...]] = []
    for el in lxml_html.document_fromstring(doc).iter():
        out.append((str(el.tag), *sorted(f"{k}={v}" for k, v in el.attrib.items())))
        out.append((" ".join((el.text or "").split()), " ".join((el.tail or "").split())))
    return out


def test_short_lines_cuts_only_safe_spaces() -> None:
    value = " ".join(["word"] * 400)  # spaces inside a value: never cut
    text = " ".join(["text"] * 600)
    doc = (
        f'<p class="a" style="margin:0; padding:0" title="{value}">{text}</p>\n'
        f"<p>{'x' * 1200}</p>\n"  # no space at all: stays long
        f"<!-- {text} -->\n"  # a comment: stays long
        f"<title>{text}</title>\n"  # raw text on the line: only attribute gaps
        "<p>short</p>"
    ).encode()
    out = short_lines(doc)
    assert out.replace(b"\n", b" ") == doc.replace(b"\n", b" ")  # only spaces became LFs
    lines = out.split(b"\n")
    assert f'title="{value}">'.encode() in out  # the value is whole
    first = out[: out.index(b"<p>x")].split(b"\n")
    assert [len(line) > MAX_HTML_LINE for line in first[:3]] == [False, True, False]
    assert first[1].startswith(b"title=") and first[1].endswith(b">text")  # cut right after
    assert all(len(line) <= MAX_HTML_LINE for line in first[2:])
    assert b"<p>" + b"x" * 1200 + b"</p>" in lines
    assert f"<!-- {text} -->".encode() in lines and f"<title>{text}</title>".encode() in lines
    assert _canonical(out) == _canonical(doc)
    assert short_lines(b"<p>short</p>\n") == b"<p>short</p>\n"


def test_a_long_run_of_tags_is_cut_between_attributes() -> None:
    tag = '<span class="chip" style="display:inline-block; padding:2px 11px">k</span>'
    doc = ("<p>" + tag * 40 + "</p>").encode()  # no text space: only attribute gaps
    out = short_lines(doc)
    assert max(map(len, out.split(b"\n"))) <= MAX_HTML_LINE
    assert out.replace(b"\n", b" ") == doc
    assert b'class="chip"\nstyle=' in out
    assert _canonical(out) == _canonical(doc)


# -- the two paths and the two encodings -------------------------------------------


def test_html_lines_are_short_on_both_paths_and_the_paths_agree() -> None:
    assert len(_requests()[3].matches[0].article.summary) > 2000  # type: ignore[attr-defined]
    qp, eight = _renderers()
    for _ in range(2):  # the second round finds every shape compiled
        for req in _requests():
            for r in (qp, eight):
                fast, ref = r.render(req), r.reference_render(req)  # type: ignore[arg-type]
                assert fast is not None and ref is not None and r.fast
                fast_html = fast.html_part
                if isinstance(fast_html, bytes):
                    fast_html = fast_html.decode()
                # The same document (the paths escape a quote differently, so the
                # comparison is the reference tests' own: parsed, white space squashed).
                assert canonical_html(fast_html) == canonical_html(ref.html)
                for doc in (fast_html, ref.html):
                    assert max(len(line.encode()) for line in doc.split("\n")) <= MAX_HTML_LINE


def test_8bit_and_quoted_printable_give_the_same_decoded_bodies() -> None:
    qp, eight = _renderers()
    for req in _requests() * 2:
        a, b = qp.render(req), eight.render(req)  # type: ignore[arg-type]
        assert a is not None and b is not None
        assert _ctes(a.data) == ["quoted-printable", "quoted-printable"]
        assert _ctes(b.data)[1] in ("8bit", "7bit") and _ctes(b.data)[0] in ("8bit", "7bit")
        assert _decoded(b.data) == _decoded(a.data)
        assert all(len(line) < 998 for line in b.data.split(b"\r\n"))
        # Re-encoded for a server without 8BITMIME: the quoted-printable build's bytes.
        assert quoted_printable_bodies(b.data) == a.data
        assert quoted_printable_bodies(a.data) is None  # nothing to re-encode


def test_a_foreign_message_is_not_taken_for_ours() -> None:
    raw = b"Subject: x\r\nContent-Transfer-Encoding: 8bit\r\n\r\ncaf\xc3\xa9\r\n"
    assert quoted_printable_bodies(raw) is None


# -- delivery -----------------------------------------------------------------------


def _outgoing(data: bytes) -> OutgoingMessage:
    return OutgoingMessage("digest@example.org", "ada@example.org", data)


def test_8bit_goes_as_it_is_to_a_server_with_8bitmime(smtp_server: SmtpTestServer) -> None:
    _, eight = _renderers()
    email_8bit = eight.render(_requests()[0])  # type: ignore[arg-type]
    assert email_8bit is not None and b"Content-Transfer-Encoding: 8bit" in email_8bit.data
    with SmtpSender(settings_from_mapping({"smtp": smtp_server.smtp_config()}).smtp) as s:
        s.send(_outgoing(email_8bit.data))
    [got] = smtp_server.messages
    assert "BODY=8BITMIME" in got.mail_options
    assert got.data == email_8bit.data


def test_a_server_without_8bitmime_gets_the_quoted_printable_bytes() -> None:
    qp, eight = _renderers()
    req = _requests()[0]
    email_qp, email_8bit = qp.render(req), eight.render(req)  # type: ignore[arg-type]
    assert email_qp is not None and email_8bit is not None
    server = start_smtp_server(RecordingHandler(offer_8bitmime=False))
    try:
        with SmtpSender(settings_from_mapping({"smtp": server.smtp_config()}).smtp) as s:
            s.send(_outgoing(email_8bit.data))
        [got] = server.messages
    finally:
        server.controller.stop()
    assert "BODY=8BITMIME" not in got.mail_options
    assert got.data == email_qp.data


def test_the_preview_file_is_quoted_printable(tmp_path: Path) -> None:
    qp, eight = _renderers()
    req = _requests()[0]
    email_qp, email_8bit = qp.render(req), eight.render(req)  # type: ignore[arg-type]
    assert email_qp is not None and email_8bit is not None
    sender = PreviewSender(tmp_path)
    message = _outgoing(email_8bit.data)
    sender.send(message)
    assert sender.path_for(message).read_bytes() == email_qp.data


# -- what a reader sees ---------------------------------------------------------------


@pytest.mark.browser
def test_the_cut_page_looks_exactly_like_the_uncut_one(
    web_driver: WebDriver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chromium draws the cut HTML pixel for pixel as the HTML rendered without cutting."""
    req = _requests()[3]
    out = Renderer(settings()).render(req)  # type: ignore[arg-type]
    monkeypatch.setattr("newsletter.render.parts.short_lines", lambda doc: doc)
    monkeypatch.setattr(
        "newsletter.render.renderer.cut_lines",
        lambda doc: (doc, max(map(len, doc.split(b"\n")))),
    )
    before = Renderer(settings()).render(req)  # type: ignore[arg-type]
    assert out is not None and before is not None
    cut, uncut = (e.html if isinstance(e.html, str) else e.html.decode() for e in (out, before))
    assert max(len(line.encode()) for line in cut.split("\n")) <= MAX_HTML_LINE
    assert max(len(line.encode()) for line in uncut.split("\n")) > MAX_HTML_LINE
    assert cut != uncut and cut.replace("\n", " ") == uncut.replace("\n", " ")
    seen = []
    for name, doc in (("cut", cut), ("uncut", uncut)):
        page = tmp_path / f"{name}.html"
        page.write_text(doc, encoding="utf-8")
        for width in (700, 360):  # desktop and phone
            web_driver.set_window_size(width, 3000)
            web_driver.get(page.as_uri())
            text = web_driver.execute_script("return document.body.innerText")
            seen.append((width, web_driver.get_screenshot_as_png(), text))
    assert seen[:2] == seen[2:]


def test_8bit_text_is_reflowed_without_encoding_its_lines_and_the_bytes_are_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from newsletter.render import plain
    from newsletter.render import renderer as renderer_module

    lone = "reward models \ud800 and preference data " * 12  # a long line, unencodable
    reqs = [*_requests(), request(profile(), [_with_summary(sample_matches(2)[1], lone)])]
    _, eight = _renderers()
    fast = [eight.render(r) for r in reqs]  # type: ignore[arg-type]
    calls: list[bool] = []

    def encoding_every_line(raw: bytes, encoded: list[bytes], *, qp: bool = True) -> object:
        calls.append(qp)
        return plain.reflow_body(raw, encoded, qp=True)  # what 8bit bodies did before

    monkeypatch.setattr(renderer_module, "reflow_body", encoding_every_line)
    _, before = _renderers()
    slow = [before.render(r) for r in reqs]  # type: ignore[arg-type]
    assert calls and not any(calls)  # 8bit asked for no encoded lines
    assert [e.data if e else None for e in fast] == [e.data if e else None for e in slow]
    long_text = ("word " * 40 + "\n") * 3
    raw = long_text.encode()
    got = plain.reflow_body(raw, [], qp=False)
    assert got is not None and got[1] == []
    assert got[0] == plain.reflow_body(raw, [], qp=True)[0]  # type: ignore[index]
    bad = ("w\ud800rd " * 30 + "\n").encode("utf-8", "surrogatepass")
    assert plain.reflow_body(bad, [], qp=True) is None  # the QP path gives up on it ...
    assert b"\xed\xa0\x80" in plain.reflow_body(bad, [], qp=False)[0]  # type: ignore[index]
