"""The fast path's shortcuts give exactly what the plain code gives.

Cards are drafted without building views (``card_drafts``), filled into pre-inlined
shapes and quoted-printable encoded on the way (``shape_fill``, ``qp``); each shortcut
is compared here with the code it stands in for, on varied and hostile input.
"""

from __future__ import annotations

import dataclasses
import random
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from newsletter.domain import Field, Hit, Match
from newsletter.render import Renderer
from newsletter.render.cards import card_draft
from newsletter.render.excerpts import Segment, wrap_text
from newsletter.render.headers import Headers, mailbox
from newsletter.render.mime import build_message
from newsletter.render.runs import wrap_tidy
from newsletter.render.shapes.compile import variant_of
from newsletter.render.views import (
    CardView,
    card_view,
    checked_url,
    clean,
    rank_keywords,
    safe_url,
    top_keywords,
)
from tests.support.digests import (
    ABSTRACT,
    article,
    canonical_html,
    match,
    profile,
    request,
    sample_matches,
    settings,
)

SENT = datetime(2026, 11, 22, 6, 30, tzinfo=UTC)
MARKED = variant_of(Segment("x", True))
BUNDLED = Path(__file__).resolve().parent.parent / "templates"


def _random_matches(seed: int, n: int) -> list[Match]:
    """Articles and hits of every awkward kind: spans out of range, overlapping and
    touching, hits only beyond the cut, doubled spaces, control characters, markup."""
    rng = random.Random(seed)
    pieces = ["RLHF", " ", "a", ".", "reward", "&", "<b>", "é", "'", " . ", "Word ", "\t", "  "]
    out = []
    for _ in range(n):
        base = rng.choice([ABSTRACT, ABSTRACT + " RLHF tail.", "Short RLHF. ", "x" * 700, ""])
        text = base + "".join(rng.choice(pieces) for _ in range(rng.randint(0, 120)))
        if rng.random() < 0.1:
            text = " " + text
        title = rng.choice(["", "RLHF x", "A  B", "Title <b>", " lead", "reward RLHF reward"])
        a = article(title, text)
        hits = []
        for _ in range(rng.randint(0, 4)):
            field: Field = rng.choice(["title", "abstract", "author", "category"])
            source = title if field == "title" else text
            spans = tuple(
                (s, s + rng.randint(0, 12))
                for s in (rng.randint(-3, len(source) + 3) for _ in range(rng.randint(0, 5)))
            )
            keyword = rng.choice(["RLHF", "reward ", "x  y", "Word"])
            hits.append(Hit(keyword, field, spans if field in ("title", "abstract") else ()))
        out.append(Match(a, 1.0, tuple(hits)))
        out.append(match(a, "RLHF", "reward"))
        # Upvotes as a reason: a trending pick (maybe with hits too) and a blended score.
        # ... with the links a Daily Papers entry carries (some, all, or unsafe ones; the
        # card's own link one of them or not) and its comment count.
        voted = dataclasses.replace(
            a,
            link=rng.choice([a.link, "https://huggingface.co/papers/2611.00001"]),
            upvotes=rng.choice([None, 0, 1, 57]),
            comments=rng.choice([None, 0, 1, 12]),
            paper_url=rng.choice(["", "https://huggingface.co/papers/2611.00001"]),
            abs_url=rng.choice(["", "https://arxiv.org/abs/2611.00001", "javascript:x"]),
            pdf_url=rng.choice(["", "https://arxiv.org/pdf/2611.00001"]),
        )
        out.append(Match(voted, 0.0, tuple(hits[:1]), trending=True))
        out.append(Match(voted, 2.5, tuple(hits), popularity=rng.choice([0.0, 1.5])))
    return out


def _runs_of(view: CardView, field: str) -> list[tuple[bool, str]]:
    return [(s.mark, s.text) for s in getattr(view, field)]


@pytest.mark.parametrize("seed", range(4))
def test_card_drafts_hold_the_values_of_card_views(seed: int) -> None:
    matches = _random_matches(seed, 400) + sample_matches(7)
    for rank, m in enumerate(matches):
        urls = (f"https://x.example/f/m{rank}", f"https://x.example/f/f{rank}") if rank % 2 else ()
        draft, view = card_draft(m, rank % 12, *urls), card_view(m, rank % 12, *urls)
        for name in CardView.__dataclass_fields__:
            if name in ("title", "abstract"):
                rows = draft.fill_rows(name)
                assert rows is not None
                texts, variants, _ = rows  # runs alternate between the two variants
                marks = [variants[i % 2] == MARKED for i in range(len(texts))]
                assert list(zip(marks, texts, strict=True)) == _runs_of(view, name), name
                assert getattr(draft, name) == getattr(view, name)
            else:
                assert getattr(draft, name) == getattr(view, name), name
        assert draft.fill_variant == variant_of(view)
        assert set(draft.keywords) == {clean(h.keyword) for h in m.hits}
        assert draft.view() == view


def test_top_keywords_from_drafts() -> None:
    ms = _random_matches(9, 60)
    p = profile(keywords=["reward", "RLHF", "Word", "x  y"])
    drafts = [card_draft(m, i) for i, m in enumerate(ms, 1)]
    assert rank_keywords(p, [d.keywords for d in drafts]) == top_keywords(p, ms)


def test_wrap_tidy_is_textwrap_for_tidy_text() -> None:
    rng = random.Random(3)
    words = ["a", "bb", "word", "…", "é", "(b)", "-", "a-b", "x.", "—"]
    for _ in range(3000):
        text = " ".join(
            rng.choice([*words, "x" * rng.randint(1, 90)]) for _ in range(rng.randint(1, 40))
        )
        assert wrap_tidy(text) == wrap_text.__wrapped__(text)


def test_safe_url_shortcut() -> None:
    rng = random.Random(5)
    alphabet = list("abcXYZ019.-/_~%:?#[]@!$&'()*+,;= é\t\"<>{}|\\^`")
    schemes = ["https://", "http://", "HTTPS://", "ftp://", "https:", "//", "javascript:"]
    for _ in range(20000):
        url = rng.choice(schemes) + "".join(rng.choice(alphabet) for _ in range(30))
        assert safe_url(url) == checked_url(url), url


def _requests() -> list[tuple[object, list[Match]]]:
    ms = sample_matches(7)
    hostile = [
        article("Tabs\tand  spaces <i>", "Safe\t\x00RLHF  with\u00a0 reward\r\nshaping  \x7f."),
        article("x=y & 'RLHF'", "x=y &amp; <b>RLHF</b> ' \" " * 40),
        article("Long", "é" * 900 + " RLHF"),
        article("Dot", "."),
    ]
    return [
        (profile(), ms[:3]),
        (profile("chloé@exämple.org", 'Chloé "C" O\'Neil', ["reward", "x & y <z>"]), ms),
        (profile(), [match(a, "RLHF", "reward") for a in hostile] + ms[:2]),
        (profile(), _random_matches(11, 6)),
    ]


def test_fast_bodies_are_what_the_builder_makes_of_the_documents() -> None:
    r = Renderer(settings(unsubscribe_mailto="unsubscribe@example.org"))
    for p, ms in _requests() * 2:  # the second round finds every shape compiled
        feedback = {
            m.article.id: (
                f"https://x.example/f/{m.article.id}/m",
                f"https://x.example/f/{m.article.id}/f",
            )
            for m in ms[1:]
        }  # type: ignore[attr-defined]
        req = request(
            p,
            ms,
            sent_at=SENT,
            preferences_url="https://x.example/p/1",
            feedback_urls=feedback,
            browser_url="https://x.example/d/1",
        )  # type: ignore[arg-type]
        email = r.render(req)
        assert email is not None and r.fast
        headers = Headers(
            sender=r.sender,
            recipient=mailbox(req.profile.email, req.profile.name or ""),
            subject=email.subject,
            date=SENT,
            message_id=email.message_id,
            list_name=r.settings.list_name,
            list_id=r.settings.list_id,
            unsubscribe_url="https://news.example.org/unsubscribe/tok123",
            unsubscribe_mailto=r.mailto,
            reply_to=r.reply_to,
        )
        rebuilt = build_message(headers, email.text, email.html)
        assert email.data == rebuilt
        ref = r.reference_render(req)
        assert ref is not None
        assert canonical_html(email.html) == canonical_html(ref.html)
        assert email.text == ref.text


def test_a_highlight_the_filler_cannot_take_as_runs_is_filled_item_by_item(
    tmp_path: Path,
) -> None:
    # A marked word printed twice: two slots per item, so the runs shortcut steps aside
    # for the real segments, and the fast path still serves the email.
    macros = (BUNDLED / "_macros.html").read_text()
    macros = macros.replace(
        "{% if s.mark %}<mark>{{ s.text }}</mark>",
        '{% if s.mark %}<mark title="{{ s.text }}">{{ s.text }}</mark>',
    )
    assert 'title="{{ s.text }}"' in macros
    (tmp_path / "_macros.html").write_text(macros)
    r = Renderer(settings(templates_dir=tmp_path))
    for _ in range(2):
        req = request(profile(), sample_matches(3))
        fast, ref = r.render(req), r.reference_render(req)
        assert fast is not None and ref is not None
        assert r.fast, r.fallback_reason
        assert canonical_html(fast.html) == canonical_html(ref.html)
        assert re.search(r'<mark title="RLHF"[^>]*>RLHF</mark>', fast.html)
