"""Rendering: what a subscriber sees in the HTML and text parts, and the fast path."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest

from newsletter.domain import Hit, Keyword, Match
from newsletter.errors import RenderError
from newsletter.render import RenderedEmail, Renderer
from newsletter.render.excerpts import Segment, merge_spans, segments, trim_plan
from newsletter.render.headers import mailbox
from newsletter.render.templates import make_environment
from newsletter.render.views import card_view, safe_url
from tests.support.digests import (
    ABSTRACT,
    UNSUB,
    article,
    canonical_html,
    match,
    profile,
    request,
    sample_matches,
    settings,
    spans_of,
)


@pytest.fixture(scope="module")
def shared() -> Renderer:
    """One renderer for read-only tests: shapes are compiled once per module."""
    return Renderer(settings())


def _render(r: Renderer, matches: list[Match], **kw: object) -> RenderedEmail:
    email = r.render(request(kw.pop("p", None) or profile(), matches, **kw))  # type: ignore[arg-type]
    assert email is not None
    return email


def _marks(html: str) -> list[str]:
    return re.findall(r"<mark\b[^>]*>(.*?)</mark>", html, re.S)


# -- the personal parts ----------------------------------------------------------------------


def test_subject_names_the_day_the_count_and_the_top_keywords(shared: Renderer) -> None:
    ms = sample_matches(5)
    email = _render(shared, ms)
    # "RLHF" and "reward" each matched in 4 entries, "bilevel optimization" in 2.
    assert email.subject.startswith("Your entries for Sun 22 Nov: 5 new on ")
    assert email.subject.split(" new on ")[1].split(", ") == [
        "RLHF",
        "reward",
        "bilevel optimization",
    ]
    one = _render(shared, [match(article("About RLHF"), "RLHF")])
    assert one.subject == "Your entries for Sun 22 Nov: 1 new on RLHF"


def test_weekly_subscribers_get_the_week_in_subject_and_text(shared: Renderer) -> None:
    p = profile(frequency="weekly")
    email = _render(shared, sample_matches(2), p=p)
    assert email.subject.startswith("Your entries for the week of Mon 16 Nov: 2 new on")
    assert "matched your keywords this week" in email.text


def test_greeting_keywords_and_footer(shared: Renderer) -> None:
    email = _render(shared, sample_matches(2))
    for part in (email.html, " ".join(email.text.split())):  # (text lines wrap at 72)
        assert "Hi Ada Lovelace," in part
        assert "ada@example.org" in part
        assert "is subscribed to Research Digest" in part
        assert "ada.yaml" not in part and "edit your profile" not in part  # not the reader's file
        assert "write to" in part
        assert "digest@example.org" in part
    chips = re.findall(r'<span class="chip"[^>]*>(.*?)</span>', email.html)
    assert chips == ["bilevel optimization", "RLHF", "reward"]
    assert "Your keywords: bilevel optimization, RLHF, reward" in email.text
    assert re.search(
        rf'<a class="unsubscribe" href="{re.escape(UNSUB)}"[^>]*>Unsubscribe</a>', email.html
    )
    assert f"Unsubscribe: {UNSUB}" in email.text
    assert "preferences" not in email.text.lower()


def test_preferences_link_and_nameless_greeting(shared: Renderer) -> None:
    p = profile(name=None)
    email = _render(
        shared, sample_matches(1), p=p, preferences_url="https://x.example/preferences/t"
    )
    assert "Hello," in email.html and "Hello," in email.text
    assert 'href="https://x.example/preferences/t"' in email.html
    assert "Your preferences: https://x.example/preferences/t" in email.text


def test_reply_to_is_the_contact_when_configured() -> None:
    r = Renderer(settings(reply_to="Operator <ops@example.org>"))
    email = _render(r, sample_matches(1))
    assert "write to ops@example.org" in email.text
    assert 'href="mailto:ops@example.org?subject=newsletter"' in email.html


# -- the cards -------------------------------------------------------------------------------


def test_card_has_linked_title_byline_date_votes_and_why(shared: Renderer) -> None:
    ms = sample_matches(3)
    email = _render(shared, ms)
    html = email.html
    assert html.count('class="card"') == 3
    first = ms[0].article
    assert re.search(rf'<a class="title-link" href="{re.escape(first.link)}"', html)
    assert "5 authors" in html  # hf:authors count only
    assert "Ada Lovelace, Alan Turing, Grace Hopper et al." in html  # four names
    assert "20 Nov 2026" in html
    assert re.search(r"&#9650;|▲", html) and ">12<" not in html  # votes inside the span
    assert "▲ 12" in email.text.replace("\xa0", " ")
    assert any(m.article.upvotes == 0 for m in ms)
    assert "▲ 0" not in email.text and "&#9650;&nbsp;0<" not in html  # none yet: not shown
    why = re.findall(r'<p class="why"[^>]*>.*?</span> (.*?)</p>', html)
    assert why[0] == "reward (title, abstract), bilevel optimization (abstract), RLHF (abstract)"
    assert (
        "Matched: reward (title, abstract), bilevel optimization (abstract), RLHF (abstract)"
        in " ".join(email.text.split())
    )


def test_highlights_mark_the_hit_spans_in_title_and_abstract(shared: Renderer) -> None:
    a = article("Reward models, reward hacking", "We study RLHF. Then rlhf again.")
    m = Match(
        a,
        1.0,
        (
            Hit("reward", "title", spans_of(a.title, "reward")),
            Hit("RLHF", "abstract", spans_of(a.summary, "rlhf")),
        ),
    )
    html = _render(shared, [m]).html
    assert _marks(html) == ["Reward", "reward", "RLHF", "rlhf"]


def test_overlapping_spans_become_one_mark(shared: Renderer) -> None:
    a = article("Bilevel optimization methods", "Plain.")
    m = Match(
        a,
        1.0,
        (
            Hit("bilevel optimization", "title", ((0, 20),)),
            Hit("optimization methods", "title", ((8, 28),)),
        ),
    )
    assert _marks(_render(shared, [m]).html) == ["Bilevel optimization methods"]


def test_feed_text_is_escaped_and_highlights_stay_safe(shared: Renderer) -> None:
    title = 'RLHF <script>alert("x")</script> & <img src=x onerror=alert(1)>'
    a = article(title, "Is <b>RLHF</b> & co safe? \"quotes\" 'single'")
    email = _render(shared, [match(a, "RLHF", "script")])
    assert "<script" not in email.html and "<img" not in email.html and "<b>" not in email.html
    assert "&lt;" in email.html
    assert _marks(email.html)[:2] == ["RLHF", "script"]
    assert title in email.text  # the text part is plain text: no escaping
    assert not re.search(r"<[^>]*\son\w+\s*=", email.html)  # no event handler attribute


def test_only_http_links_become_hrefs(shared: Renderer) -> None:
    bad = [
        "javascript:alert(1)",
        "data:text/html,<b>x</b>",
        "//evil.example/x",
        "/relative",
        "vbscript:x",
    ]
    ms = [match(article(f"RLHF {i}", "RLHF.", link=u), "RLHF") for i, u in enumerate(bad)]
    email = _render(shared, ms)
    hrefs = re.findall(r'href="([^"]*)"', email.html)
    assert all(h.startswith(("https://", "http://", "mailto:")) for h in hrefs)
    assert "javascript" not in email.html and "javascript" not in email.text
    assert email.html.count('class="title-link"') == 0


def test_safe_url_encodes_and_rejects() -> None:
    assert safe_url("https://example.org/a b/é?q=ü") == "https://example.org/a%20b/%C3%A9?q=%C3%BC"
    assert safe_url("https://bücher.example/x") == "https://xn--bcher-kva.example/x"
    assert safe_url(" HTTPS://Example.org/x ") == "HTTPS://Example.org/x"
    for bad in (
        "javascript:alert(1)",
        "JaVaScRiPt:x",
        "data:x",
        "ftp://x/y",
        "https://",
        "http:///x",
        "mailto:a@b",
    ):
        assert safe_url(bad) == "", bad
    assert safe_url("https://example.org/%41") == "https://example.org/%41"  # no double encoding


def test_long_abstract_is_cut_at_a_sentence_with_read_more(shared: Renderer) -> None:
    a = article("Reward", ABSTRACT)
    email = _render(shared, [match(a, "reward")])
    shown = re.search(r'<p class="abstract"[^>]*>(.*?)<a class="read-more"', email.html, re.S)
    assert shown is not None
    text = re.sub(r"<[^>]+>", "", shown.group(1)).strip()
    assert text.endswith("performance.")  # the last sentence end before ~600 chars
    assert 300 < len(text) < 700
    assert re.search(rf'<a class="read-more" href="{re.escape(a.link)}"', email.html)
    short = _render(shared, [match(article("RLHF", "Short. RLHF."), "RLHF")])
    assert 'class="read-more"' not in short.html


def test_a_hit_beyond_the_cut_is_shown_as_a_snippet(shared: Renderer) -> None:
    a = article("Unrelated title", ABSTRACT)
    email = _render(shared, [match(a, "RLHF")])
    assert _marks(email.html) == ["RLHF"]  # the only hit is after the first 600 chars
    assert " … " in email.html and "RLHF pipelines benefit." in email.text.replace("\n", " ")


def test_trim_plan_and_segments_adjust_spans() -> None:
    text = "First sentence here. " * 40  # 840 chars, a sentence end every 21
    spans = [(0, 5), (580, 600), (830, 835)]
    ranges, trimmed = trim_plan(text, spans)
    assert trimmed and ranges == [(0, 587)]  # the last sentence end before 600
    segs = segments(text, spans, *ranges[0])
    assert segs[0] == Segment("First", True)
    assert segs[-1] == Segment(text[580:587], True)  # the span crossing the cut is cut too
    assert "".join(s.text for s in segs) == text[:587]
    assert merge_spans([(5, 9), (0, 3), (2, 6), (9, 10), (50, 60), (-4, 1)], 20) == [(0, 10)]
    # Only hits beyond the cut: a window around the first one is added.
    ranges, _ = trim_plan(text, [(830, 835)])
    assert len(ranges) == 2 and ranges[1][0] < 830 < 835 <= ranges[1][1]


def test_cards_of_one_entry_share_the_plain_abstract_but_not_the_marks() -> None:
    # Per-entry work is cached across subscribers; each one's highlights must stay its own.
    a = article("Reward shaping for safe behaviors", ABSTRACT)
    one, other = card_view(match(a, "reward"), 1), card_view(match(a, "behaviors"), 2)
    assert one.abstract_text == other.abstract_text and one.more_link == other.more_link
    assert {s.text.lower() for s in one.abstract if s.mark} == {"reward"}
    assert {s.text for s in other.abstract if s.mark} == {"behaviors"}
    assert [s.text for s in one.title if s.mark] == ["Reward"]
    assert [s.text for s in other.title if s.mark] == ["behaviors"]
    assert (one.rank, other.rank) == (1, 2)


def test_card_text_is_cleaned_around_highlights() -> None:
    # Tabs, NUL, NBSP and doubled spaces on both sides of a highlight's edges.
    text = "Safe\t\x00RLHF  with\u00a0 reward\r\nshaping  \x7f."
    card = card_view(match(article("t", text), "RLHF", "reward"), 1)
    assert card.abstract == (
        Segment("Safe "),
        Segment("RLHF", True),
        Segment(" with "),
        Segment("reward", True),
        Segment(" shaping ."),
    )
    # A line break is a summary's block break (a paragraph, a list item): kept in the
    # text part, white space in the HTML.
    assert card.abstract_text == "Safe RLHF with reward\nshaping ."


# -- CSS ----------------------------------------------------------------------------------------


def test_css_is_inlined_and_media_rules_stay_in_head(shared: Renderer) -> None:
    html = _render(shared, sample_matches(2)).html
    head, body = html.split("</head>", 1)
    assert "<style" not in body
    assert "@media only screen and (max-width: 620px)" in head
    assert "@media (prefers-color-scheme: dark)" in head
    assert "!important" in head  # overrides beat inline styles
    assert '<meta name="color-scheme" content="light dark">' in head
    card = re.search(r'<table role="presentation" class="card"[^>]*style="([^"]*)"', body)
    assert card and "background-color:#fff" in card.group(1).replace(" ", "")
    assert re.search(r'<mark style="[^"]*background-color:#fde68a', body)
    assert re.search(r'class="container"[^>]*style="[^"]*max-width:640px', body)
    tables = re.findall(r"<table\b[^>]*>", body)
    assert tables and all('role="presentation"' in t for t in tables)


# -- empty digests and templates --------------------------------------------------------------


def test_nothing_matched_means_no_email_by_default(shared: Renderer) -> None:
    assert shared.render(request(profile(), [])) is None


def test_send_empty_writes_a_short_note() -> None:
    r = Renderer(settings(send_empty=True))
    email = r.render(request(profile(), []))
    assert email is not None
    assert email.subject == "Research Digest: nothing new for Sun 22 Nov"
    assert "Nothing new matched your keywords today" in email.html
    assert "Nothing new matched your keywords today" in email.text
    assert email.entry_ids == () and email.n_cards == 0
    assert UNSUB in email.html


def test_autoescape_and_strict_undefined(tmp_path: Path) -> None:
    env = make_environment(None)
    assert env.from_string("{{ x }}").render(x="<b>") == "&lt;b&gt;"
    (tmp_path / "t.txt").write_text("{{ x }}")
    (tmp_path / "t.html").write_text("{{ x }}")
    env = make_environment(tmp_path)
    assert env.get_template("t.txt").render(x="<b>") == "<b>"
    assert env.get_template("t.html").render(x="<b>") == "&lt;b&gt;"
    (tmp_path / "subject.txt").write_text("{{ no_such_variable }}")
    with pytest.raises(RenderError, match="no_such_variable"):
        Renderer(settings(templates_dir=tmp_path)).render(request(profile(), sample_matches(1)))


def test_user_template_overrides_a_block_of_the_bundled_one(tmp_path: Path) -> None:
    (tmp_path / "digest.html").write_text(
        '{% extends "bundled/digest.html" %}\n'
        '{% block intro %}<tr><td class="intro"><h1 class="greeting">Moin {{ name }}!</h1>'
        "</td></tr>{% endblock %}\n"
    )
    (tmp_path / "style.css").write_text(
        (Path(__file__).parent.parent / "templates" / "style.css").read_text()
        + "\n.greeting { color: #ff0000; }\n"
    )
    r = Renderer(settings(templates_dir=tmp_path))
    email = _render(r, sample_matches(2))
    assert "Moin Ada Lovelace!" in email.html
    assert re.search(r'class="greeting" style="[^"]*color:#f00"', email.html)
    assert email.html.count('class="card"') == 2  # the rest is the bundled digest
    assert r.fast, r.fallback_reason


# -- the fast path equals the reference path ---------------------------------------------------


def _subscribers() -> list[tuple[object, list[Match]]]:
    ms = sample_matches(7)
    return [
        (profile(), ms[:3]),
        (profile("bob@example.org", None, ["RLHF"]), ms[1:6]),
        (profile("chloé@exämple.org", 'Chloé "C" O\'Neil, PhD', ["reward", "x & y <z>"]), ms),
        (profile("dan@example.org", "Dan", ["RLHF"], frequency="weekly"), [ms[2]]),
        (
            profile("eve@example.org", "Eve\r\nBcc: x@y", ["RLHF"]),
            [match(article("A\u2028B <i>"), "A")],
        ),
    ]


def test_fast_html_equals_reference_after_parsing() -> None:
    r = Renderer(settings(unsubscribe_mailto="unsubscribe@example.org"))
    for p, ms in _subscribers():
        req = request(p, ms, preferences_url="https://x.example/p/1")  # type: ignore[arg-type]
        fast, ref = r.render(req), r.reference_render(req)
        assert fast is not None and ref is not None
        assert canonical_html(fast.html) == canonical_html(ref.html), p
        assert fast.text == ref.text
        assert fast.subject == ref.subject and fast.entry_ids == ref.entry_ids
    assert r.fast, r.fallback_reason
    # A few shapes, compiled once each, serve every subscriber.
    compiles = sum(c.compiles for c in r._compilers.values())
    assert compiles <= 8


BUNDLED = Path(__file__).resolve().parent.parent / "templates"
DEFEATS_FAST_PATH = {
    # loop.index in the output makes every card differ.
    "loop index": (
        "digest.html",
        '{% extends "bundled/digest.html" %}\n'
        '{% block cards %}{% for card in cards %}<tr><td class="card-body">{{ loop.index }}. '
        "{{ card.title_text }}</td></tr>{% endfor %}{% endblock %}\n",
    ),
    # A repeated unit without |fragment: its values turn up outside any fragment.
    "no fragment marker": (
        "_macros.html",
        (BUNDLED / "_macros.html")
        .read_text()
        .replace("{{ segment(s)|fragment(s) }}", "{{ segment(s) }}"),
    ),
    # A filter on a per-subscriber value.
    "filtered value": (
        "digest.html",
        (BUNDLED / "digest.html").read_text().replace("Hi {{ name }}", "Hi {{ name|upper }}"),
    ),
}


@pytest.mark.parametrize("case", sorted(DEFEATS_FAST_PATH))
def test_a_template_the_fast_path_cannot_reuse_falls_back(
    case: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    name, source = DEFEATS_FAST_PATH[case]
    (tmp_path / name).write_text(source)
    r = Renderer(settings(templates_dir=tmp_path))
    req = request(profile(), sample_matches(3))
    fast, ref = r.render(req), r.reference_render(req)
    assert fast is not None and ref is not None
    assert not r.fast and r.fallback_reason
    assert canonical_html(fast.html) == canonical_html(ref.html)
    assert fast.text == ref.text
    assert "fast renderer" in caplog.text
    # Later emails take the reference path directly and are still right.
    again = r.render(request(profile("bob@example.org", "Bob"), sample_matches(2)))
    assert again is not None and ("Hi BOB," in again.html or case != "filtered value")


# -- size budget -------------------------------------------------------------------------------


@pytest.mark.parametrize("reference", [False, True], ids=["fast", "reference"])
def test_size_budget_summarises_the_rest_as_links(reference: bool) -> None:
    long = " ".join(["RLHF makes models helpful and this sentence is long enough."] * 40)
    ms = [match(article(f"RLHF paper number {i} " + "x" * 150, long), "RLHF") for i in range(60)]
    r = Renderer(settings(max_email_bytes=60_000))
    req = request(profile(), ms)
    email = r.reference_render(req) if reference else r.render(req)
    assert email is not None
    assert email.size <= 60_000
    assert 0 < email.n_cards < 60 and email.n_cards + email.n_more == 60
    assert email.html.count('class="card"') == email.n_cards
    assert (
        f"{email.n_more} more matches" in email.html
        and f"{email.n_more} more matches" in email.text
    )
    assert email.html.count('class="more-link"') == email.n_more
    assert len(email.entry_ids) == 60
    # The most cards that fit: one more would not have.
    cards = [card_view(m, i) for i, m in enumerate(ms, start=1)]
    k = email.n_cards
    one_more = r._email(req, mailbox("ada@example.org"), "digest", cards, k + 1, 59 - k, reference)
    assert one_more.size > 60_000


def test_budget_smaller_than_an_empty_digest_is_an_error() -> None:
    r = Renderer(settings(max_email_bytes=2_000))
    with pytest.raises(RenderError, match="max_email_bytes"):
        r.render(request(profile(), sample_matches(2)))


def test_render_is_deterministic(shared: Renderer) -> None:
    req = request(profile(), sample_matches(4))
    a, b = shared.render(req), Renderer(settings()).render(req)
    assert a is not None and b is not None
    assert a.data == b.data


def test_entry_ids_follow_the_rank(shared: Renderer) -> None:
    ms = sample_matches(4)
    email = _render(shared, ms)
    assert email.entry_ids == tuple(m.article.id for m in ms)
    assert [int(x) for x in re.findall(r'<p class="kicker"[^>]*>#(\d+)</p>', email.html)] == [
        1,
        2,
        3,
        4,
    ]


def test_keyword_modifiers_do_not_change_the_chip(shared: Renderer) -> None:
    p = replace(profile(), keywords=(Keyword("RLHF", weight=2, exact=True, field="title"),))
    email = _render(shared, sample_matches(1), p=p, day=date(2026, 11, 23))
    assert re.findall(r'<span class="chip"[^>]*>(.*?)</span>', email.html) == ["RLHF"]
    assert email.subject.startswith("Your entries for Mon 23 Nov")
