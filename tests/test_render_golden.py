"""Golden files: a fixed feed and profile give an expected ``.eml``.

Regenerate on purpose with ``NEWSLETTER_UPDATE_GOLDEN=1`` and review the diff. ``Date``,
``Message-ID`` and the MIME boundary are normalised, so the files only change when what
a subscriber sees changes.
"""

from __future__ import annotations

import email
import email.policy
import os
import re
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest

from newsletter.domain import Article, Keyword, Profile
from newsletter.ingest import parse_feed
from newsletter.ingest.hf import parse_daily_papers
from newsletter.matching import Matcher
from newsletter.matching.digest import digest_picks
from newsletter.render import RenderedEmail, Renderer
from tests.support.digests import request, settings, stored_articles

HERE = Path(__file__).resolve().parent
FEED = HERE / "fixtures" / "golden_feed.atom"
PAPERS = HERE / "fixtures" / "golden_daily_papers.json"  # one paper: the trending card
GOLDEN = HERE / "golden"
NOW = datetime(2026, 11, 21, 5, tzinfo=UTC)
UPDATE = os.environ.get("NEWSLETTER_UPDATE_GOLDEN") == "1"

PROFILE = Profile(
    email="zoe@example.org",
    name="Zoë Ñúñez",
    keywords=(
        Keyword("bilevel optimization", weight=2),
        Keyword("RLHF"),
        Keyword("reward"),
        Keyword("Schrodinger bridge"),
        Keyword("objectives"),
    ),
    exclude=(Keyword("topological"),),
    trending=1,
    source="subscribers/zoe.yaml",
)


def _articles() -> list[Article]:
    parsed = parse_feed(FEED.read_bytes(), base_url="https://example.org/feed", now=NOW)
    atom = stored_articles(parsed.entries, first_id=1, feed_name="golden", now=NOW)
    papers, skipped = parse_daily_papers(PAPERS.read_bytes(), listed=NOW.date(), now=NOW)
    assert not skipped
    hf = stored_articles(papers, first_id=len(atom) + 1, feed_name="hf", now=NOW)
    return atom + hf


def _render(renderer: Renderer, profile: Profile) -> RenderedEmail:
    matches = digest_picks(Matcher(_articles()), profile, candidates=None, limit=10)
    out = renderer.render(
        request(
            profile,
            matches,
            unsubscribe_url="https://news.example.org/unsubscribe/GOLDENTOKEN",
            preferences_url="https://news.example.org/preferences/GOLDENTOKEN",
            feedback_urls={
                m.article.id: (
                    f"https://news.example.org/feedback/MORE{m.article.id}",
                    f"https://news.example.org/feedback/FEWER{m.article.id}",
                )
                for m in matches
            },
            browser_url="https://news.example.org/d/GOLDENVIEW",
        )
    )
    assert out is not None
    return out


def normalise(data: bytes) -> str:
    """The message with Date, Message-ID and boundaries made constant, LF line ends."""
    text = data.decode("utf-8").replace("\r\n", "\n")
    text = re.sub(r"(?m)^Date: .*$", "Date: <normalised>", text)
    text = re.sub(r"(?m)^Message-ID: .*$", "Message-ID: <normalised@example.org>", text)
    for boundary in set(re.findall(r'boundary="([^"]+)"', text)):
        text = text.replace(boundary, "BOUNDARY")
    return text


def _check_golden(name: str, data: bytes) -> None:
    path = GOLDEN / name
    got = normalise(data)
    if UPDATE or not path.exists():
        if not UPDATE:
            pytest.fail(f"{path} is missing; run with NEWSLETTER_UPDATE_GOLDEN=1 to create it")
        path.write_text(got, encoding="utf-8")
    assert got == path.read_text(encoding="utf-8"), (
        f"{name} differs from the golden file; if the change is intended, "
        "regenerate with NEWSLETTER_UPDATE_GOLDEN=1 and review the diff"
    )


def _parse(path: Path) -> EmailMessage:
    msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def test_digest_matches_the_golden_file() -> None:
    out = _render(Renderer(settings(unsubscribe_mailto="unsubscribe@example.org")), PROFILE)
    _check_golden("digest.eml", out.data)

    msg = _parse(GOLDEN / "digest.eml")
    assert msg["From"] == "Research Digest <digest@example.org>"
    assert msg["To"] == "Zoë Ñúñez <zoe@example.org>"
    assert msg["Subject"] == out.subject
    assert out.subject.startswith("Your entries for Sun 22 Nov: ")
    assert msg["List-Id"] == "Research Digest <digest.example.org>"
    assert msg["List-Unsubscribe"] == (
        "<https://news.example.org/unsubscribe/GOLDENTOKEN>, "
        "<mailto:unsubscribe@example.org?subject=unsubscribe>"
    )
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg.get_content_type() == "multipart/alternative"
    text, html = msg.iter_parts()
    assert (text.get_content_type(), html.get_content_type()) == ("text/plain", "text/html")
    plain = text.get_content()
    assert "Hi Zoë Ñúñez," in plain
    assert "Schrödinger Bridges & Bilevel Optimization for “RLHF” <at scale>" in plain
    assert "Zoë Ñúñez, Ada Lovelace, Alan Turing et al." in plain
    markup = html.get_content()
    assert "Schrödinger Bridges &amp; " in markup and "&lt;at scale&gt;" in markup
    assert "<mark" in markup and "<script" not in markup
    assert "NOTEARS" not in markup  # matches "objectives" but is excluded by "topological"
    assert "https://example.org/papers/schr%C3%B6dinger?id=1&amp;v=2" in markup
    # the trending pick: last, badged, with its paper page and arXiv links, upvotes as why
    flat = " ".join(plain.split())  # (text lines wrap at 72)
    assert "[Trending] Sparse Token Routing Makes Mixture-of-Experts Cheap to Serve" in flat
    assert "Mira Okafor, Jonas Weber, Lina Haddad et al." in plain
    assert "Matched: trending, 57 upvotes" in plain
    # The summary's two paragraphs stay two lines; nothing but URL lines passes 72.
    assert "result to RLHF.\nReward models & preference data are cheap." in plain
    assert [line for line in plain.splitlines() if len(line) > 72 and "://" not in line] == []
    assert markup.count(">Trending</span>") == 1
    for url in (
        "https://huggingface.co/papers/2611.04242",
        "https://arxiv.org/abs/2611.04242",
        "https://arxiv.org/pdf/2611.04242",
    ):
        assert f'href="{url}"' in markup and url in plain
    # every card can be tuned; the footer links to the preferences, not to a YAML file
    assert markup.count(">More like this</a>") == markup.count('class="card"') == out.n_cards
    assert plain.count("Fewer like this: https://news.example.org/feedback/FEWER") == out.n_cards
    assert "zoe.yaml" not in plain and "zoe.yaml" not in markup
    assert "View in browser: https://news.example.org/d/GOLDENVIEW" in plain


def test_empty_note_matches_the_golden_file() -> None:
    nobody = Profile(email="bob@example.org", keywords=(Keyword("quantum gravity"),))
    out = _render(Renderer(settings(send_empty=True)), nobody)
    _check_golden("empty.eml", out.data)
    msg = _parse(GOLDEN / "empty.eml")
    assert msg["Subject"] == "Research Digest: nothing new for Sun 22 Nov"
    assert msg["To"] == "bob@example.org"
    text, html = msg.iter_parts()
    assert "Nothing new matched your keywords today" in text.get_content()
    assert "Nothing new matched your keywords today" in html.get_content()
