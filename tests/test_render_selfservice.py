"""The email's self-service links: More/Fewer like this on cards, the footer's
preferences link (not the YAML file's name) and View in browser, on both render paths."""

from __future__ import annotations

import re

import pytest

from newsletter.render import Renderer
from newsletter.render.shapes.compile import same_html
from tests.support.digests import profile, request, sample_matches, settings

BASE = "https://news.example.org"
PREFS = f"{BASE}/preferences/TOKEN"
VIEW = f"{BASE}/d/VIEWTOKEN"


def _links(matches: list) -> dict[int, tuple[str, str]]:  # type: ignore[type-arg]
    return {
        m.article.id: (f"{BASE}/feedback/M{m.article.id}", f"{BASE}/feedback/F{m.article.id}")
        for m in matches
    }


def _both(req: object) -> tuple[object, object]:
    fast = Renderer(settings()).render(req)  # type: ignore[arg-type]
    reference = Renderer(settings()).reference_render(req)  # type: ignore[arg-type]
    assert fast is not None and reference is not None
    return fast, reference


@pytest.mark.parametrize("fast", [True, False])
def test_every_card_has_more_and_fewer_like_this_in_html_and_text(fast: bool) -> None:
    matches = sample_matches(5)
    req = request(profile(), matches, feedback_urls=_links(matches), preferences_url=PREFS)
    r = Renderer(settings(), fast=fast)
    email = r.render(req)
    assert email is not None
    cards = email.html.split('class="card"')[1:]
    assert len(cards) == email.n_cards == 5
    for m, card in zip(matches, cards, strict=True):
        i = m.article.id
        assert re.search(
            rf'<a class="tune-link" href="{BASE}/feedback/M{i}"[^>]*>More like this', card
        )
        assert re.search(
            rf'<a class="tune-link" href="{BASE}/feedback/F{i}"[^>]*>Fewer like this', card
        )
        assert f"More like this: {BASE}/feedback/M{i}\nFewer like this: {BASE}/feedback/F{i}\n" in (
            email.text
        )
    # the same email again: now from compiled shapes on the fast path
    again = r.render(req)
    assert again is not None and again.data == email.data


def test_fast_and_reference_agree_with_feedback_links() -> None:
    matches = sample_matches(7)
    links = _links(matches)
    del links[matches[2].article.id]  # an entry without links: that card has none
    req = request(profile(), matches, feedback_urls=links, browser_url=VIEW, preferences_url=PREFS)
    fast, reference = _both(req)
    assert fast.text == reference.text  # type: ignore[attr-defined]
    assert same_html(fast.html, reference.html)  # type: ignore[attr-defined]
    assert fast.html.count("More like this") == 6  # type: ignore[attr-defined]


def test_no_links_without_urls_and_unsafe_ones_are_dropped() -> None:
    matches = sample_matches(3)
    plain = Renderer(settings()).render(request(profile(), matches))
    assert plain is not None
    assert "like this" not in plain.html and "like this" not in plain.text
    assert "View in browser" not in plain.html and "View in browser" not in plain.text
    bad = {m.article.id: ("javascript:alert(1)", f"{BASE}/x") for m in matches}
    email = Renderer(settings()).render(request(profile(), matches, feedback_urls=bad))
    assert email is not None and "like this" not in email.html and "javascript" not in email.html


@pytest.mark.parametrize("fast", [True, False])
def test_footer_links_to_preferences_and_view_in_browser_not_the_yaml_file(fast: bool) -> None:
    p = profile()
    assert p.source.endswith("ada.yaml")
    req = request(p, sample_matches(2), preferences_url=PREFS, browser_url=VIEW)
    email = Renderer(settings(), fast=fast).render(req)
    assert email is not None
    for part in (email.html, email.text):
        assert "ada.yaml" not in part and "edit your profile" not in part
    assert re.search(
        rf'open <a class="footer-link" href="{PREFS}"[^>]*>your preferences</a>', email.html
    )
    assert re.search(rf'<a class="footer-link" href="{VIEW}"[^>]*>View in browser</a>', email.html)
    assert "open your preferences or write to" in email.text
    assert f"Your preferences: {PREFS}\n" in email.text
    assert f"View in browser: {VIEW}\n" in email.text


def test_the_empty_note_has_the_same_footer() -> None:
    req = request(profile(), [], preferences_url=PREFS, browser_url=VIEW)
    fast, reference = (
        Renderer(settings(send_empty=True)).render(req),
        Renderer(settings(send_empty=True)).reference_render(req),
    )
    assert fast is not None and reference is not None
    assert fast.text == reference.text and f"View in browser: {VIEW}" in fast.text
    assert "ada.yaml" not in fast.text and f'href="{PREFS}"' in fast.html
