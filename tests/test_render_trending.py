"""A trending pick in the email: its badge, the paper page / arXiv links and the comment
count on cards."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from newsletter.domain import Article, Match
from newsletter.render import Renderer
from tests.support.digests import article, match, profile, request, settings

PAPER = "https://huggingface.co/papers/2611.01234"
ABS = "https://arxiv.org/abs/2611.01234"
PDF = "https://arxiv.org/pdf/2611.01234"


def _hf_article() -> Article:
    a = article(
        "Sparse Routing for Mixture-of-Experts",
        "We route tokens sparsely.",
        link=PAPER,
        authors=["Ada Lovelace", "Alan Turing", "Grace Hopper", "Edsger Dijkstra"],
        upvotes=42,
    )
    return replace(a, paper_url=PAPER, abs_url=ABS, pdf_url=PDF, comments=7)


@pytest.mark.parametrize("fast", [True, False])  # the compiled path and the reference
def test_a_trending_pick_has_a_badge_and_the_paper_and_arxiv_links(fast: bool) -> None:
    keyword = match(article(), "RLHF")
    trending = Match(_hf_article(), 0.0, (), trending=True)
    email = Renderer(settings(), fast=fast).render(
        request(profile(keywords=["RLHF"], trending=1), [keyword, trending])
    )
    assert email is not None
    html, text = email.html, email.text
    badges = re.findall(r'<span class="badge"[^>]*>(.*?)</span>', html)
    assert badges == ["Trending"]  # the trending card only
    card = html[html.rindex('class="card"') :]  # the second card
    assert 'class="badge"' in card and "Sparse Routing" in card
    for url, label in ((PAPER, "Paper page"), (ABS, "arXiv"), (PDF, "PDF")):
        assert re.search(rf'<a class="paper-link" href="{re.escape(url)}"[^>]*>{label}</a>', html)
    assert "2. [Trending] Sparse Routing for Mixture-of-Experts" in text
    assert "1. [Trending]" not in text
    assert f"Paper page: {PAPER}\narXiv abstract: {ABS}\nPDF: {PDF}\n" in text
    for url in (PAPER, ABS, PDF):  # the card's link is the paper page: once, labelled
        assert text.count(url) == 1
    assert "Ada Lovelace, Alan Turing, Grace Hopper et al." in text
    assert "Matched: trending, 42 upvotes" in text
    assert "2 new entries matched your keywords or are trending today" in text
    assert "2 new entries matched your keywords or are trending today." in html


@pytest.mark.parametrize("fast", [True, False])
def test_a_digest_of_trending_picks_only_says_so(fast: bool) -> None:
    picks = [Match(_hf_article(), 0.0, (), trending=True)]
    email = Renderer(settings(), fast=fast).render(request(profile(keywords=[], trending=5), picks))
    assert email is not None
    assert "1 new entry is trending today" in email.text
    assert "matched your keywords" not in email.text + email.html


@pytest.mark.parametrize("fast", [True, False])
def test_links_are_shown_only_when_known_and_safe(fast: bool) -> None:
    a = replace(_hf_article(), paper_url="", abs_url="javascript:alert(1)")
    email = Renderer(settings(), fast=fast).render(
        request(profile(keywords=["Sparse"]), [match(a, "Sparse")])
    )
    assert email is not None
    links = re.findall(r'class="paper-link" href="([^"]*)"[^>]*>([^<]*)<', email.html)
    assert links == [(PDF, "PDF")]
    assert "javascript" not in email.html and "javascript" not in email.text
    assert "Paper page:" not in email.text and f"PDF: {PDF}" in email.text
    assert "[Trending]" not in email.text and 'class="badge"' not in email.html


@pytest.mark.parametrize("fast", [True, False])
def test_the_comment_count_is_shown_when_known_and_not_zero(fast: bool) -> None:
    renderer = Renderer(settings(), fast=fast)
    email = renderer.render(request(profile(keywords=["Sparse"]), [match(_hf_article(), "Sparse")]))
    assert email is not None
    assert re.search(r'<span class="comments"[^>]*>7 comments</span>', email.html)
    assert "Ada Lovelace, Alan Turing, Grace Hopper et al. · " in email.text
    assert " · ▲ 42 ·\n7 comments\n" in email.text  # (80 columns: wrapped between parts)
    for count in (None, 0):
        quiet = replace(_hf_article(), comments=count)
        got = renderer.render(request(profile(keywords=["Sparse"]), [match(quiet, "Sparse")]))
        assert got is not None
        assert "comment" not in got.text and 'class="comments"' not in got.html
    one = replace(_hf_article(), comments=1, upvotes=None)
    got = renderer.render(request(profile(keywords=["Sparse"]), [match(one, "Sparse")]))
    assert got is not None and " · 1 comment\n" in got.text


@pytest.mark.parametrize("fast", [True, False])
def test_a_link_of_its_own_stays_in_the_text_part(fast: bool) -> None:
    """A card whose link is none of the labelled ones keeps it, unlabelled, once."""
    post = "https://blog.example.org/sparse-routing"
    a = replace(_hf_article(), link=post)
    email = Renderer(settings(), fast=fast).render(
        request(profile(keywords=["Sparse"]), [match(a, "Sparse")])
    )
    assert email is not None
    assert f"\n{post}\nPaper page: {PAPER}\n" in email.text
    assert [email.text.count(u) for u in (post, PAPER, ABS, PDF)] == [1, 1, 1, 1]
