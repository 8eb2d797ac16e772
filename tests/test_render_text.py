"""The plain-text part reads right: lines of at most 72 columns (only a line holding a URL
may be longer), headings, paragraphs and list items of a summary on lines of their own,
the same bytes from the fast path and the Jinja reference."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from newsletter.domain import Keyword, Match, Profile
from newsletter.ingest import parse_feed
from newsletter.ingest.hf import parse_daily_papers
from newsletter.ingest.text import html_to_text
from newsletter.matching import Matcher
from newsletter.matching.digest import digest_picks
from newsletter.render import RenderedEmail, Renderer
from newsletter.render.plain import WIDTH, labelled_url, reflow, wrap_line
from tests.support.digests import article, match, profile, request, settings, stored_articles

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 1, 10, 6, tzinfo=UTC)


def long_lines(text: str) -> list[str]:
    """The lines over 72 columns that hold no URL: there should be none."""
    return [line for line in text.splitlines() if len(line) > WIDTH and "://" not in line]


def both(r: Renderer, req: object) -> RenderedEmail:
    """The fast path's email, checked byte for byte against the reference render."""
    fast = r.render(req)  # type: ignore[arg-type]
    ref = r.reference_render(req)  # type: ignore[arg-type]
    assert fast is not None and ref is not None
    assert fast.text == ref.text
    return fast


def test_block_breaks_survive_html_to_text() -> None:
    html = (
        "<h1>Changes</h1><ul><li>Add a <b>faster</b>\nparser</li><li>Fix the build</li></ul>"
        "<p>First paragraph.</p><p>Second one.<br>Its next line.</p>"
    )
    assert html_to_text(html, blocks=True) == (
        "Changes\n- Add a faster parser\n- Fix the build\nFirst paragraph.\nSecond one.\n"
        "Its next line."
    )
    # Titles and names stay one line; plain text's own line breaks are white space.
    assert html_to_text(html) == (
        "Changes Add a faster parser Fix the build First paragraph. Second one. Its next line."
    )
    assert html_to_text("hard-wrapped\nabstract", blocks=True) == "hard-wrapped abstract"


def test_reflow_keeps_urls_whole_and_lists_hanging() -> None:
    url = "https://example.org/" + "a" * 90
    text = "\n".join(
        [
            "short line",
            "3. " + "word " * 30,
            "- " + "item " * 20,
            f"Paper page: {url}",
            f"see {url} and then more words after it that go on",
            "x" * 150,
            "-- ",
        ]
    )
    out = reflow(text).splitlines()
    assert out[0] == "short line"
    assert out[1].startswith("3. word") and out[2].startswith("   word")
    assert any(line.startswith("- item") for line in out)
    assert any(line.startswith("  item") for line in out)
    assert f"Paper page: {url}" in out  # a short label stays with its URL
    assert sum(line.count(url) for line in out) == 2  # never broken
    assert "".join(line.strip() for line in out if set(line.strip()) == {"x"}) == "x" * 150
    assert out[-1] == "-- "  # the signature separator keeps its space
    assert long_lines("\n".join(out)) == []
    assert reflow("\n".join(out)) == "\n".join(out)  # wrapped text stays as it is
    meta = "Mira Okafor, Jonas Weber, Lina Haddad et al. · 20 Nov 2026 · ▲\xa057 · 3 comments"
    assert reflow(meta).splitlines() == [
        "Mira Okafor, Jonas Weber, Lina Haddad et al. · 20 Nov 2026 · ▲\xa057 ·",
        "3 comments",
    ]


def _sample_articles() -> list:  # type: ignore[type-arg]
    arts = []
    for i, path in enumerate(sorted((ROOT / "examples" / "feeds").glob("*.atom"))):
        parsed = parse_feed(path.read_bytes(), base_url=f"https://example.org/{i}", now=NOW)
        arts += stored_articles(parsed.entries, first_id=1000 * (i + 1), feed_name="f", now=NOW)
    for i, path in enumerate(sorted((ROOT / "examples" / "hf-api").glob("*.json"))):
        papers, _ = parse_daily_papers(path.read_bytes(), listed=date(2026, 1, 9), now=NOW)
        arts += stored_articles(papers, first_id=10_000 * (i + 1), feed_name="hf", now=NOW)
    return arts


def test_sample_digests_have_no_line_over_72_but_urls() -> None:
    arts = _sample_articles()
    matcher = Matcher(arts)
    r = Renderer(settings(noun="paper"))
    checked = 0
    for terms in (
        ("bilevel optimization", "RLHF", "reward"),
        ("preference optimization", "diffusion", "language models", "reinforcement learning"),
        ("vision", "benchmark", "agents", "reasoning", "video generation"),
    ):
        p = Profile(
            email="reader.with.a.rather.long.address@research-group.example.org",
            name="Reader",
            keywords=tuple(Keyword(t) for t in terms),
            trending=2,
            source="subscribers/reader-with-a-long-profile-file-name.yaml",
        )
        matches = digest_picks(matcher, p, candidates=None, limit=10)
        assert matches
        email = both(r, request(p, matches))
        assert long_lines(email.text) == [], email.text
        checked += 1
    assert checked == 3


@pytest.mark.parametrize("seed", range(3))
def test_hostile_titles_and_summaries_wrap_on_both_paths(seed: int) -> None:
    word = "Supercalifragilistic" * (4 + seed)  # one word longer than a line
    titles = [
        "A " + "very long title " * (12 + seed),
        word,
        f"Title with a link https://example.org/{'p' * 80} inside it and words after",
        "Ünïcödé tïtlé " * 9,
    ]
    summaries = [
        "Prose " * 200,
        f"{word} " * 5,
        html_to_text(
            "<h2>Release notes</h2><ul>"
            + "".join(
                f"<li>Item {i}: " + "a change that is described at length " * 3 + "</li>"
                for i in range(4)
            )
            + "</ul><p>"
            + "Closing words. " * 20
            + "</p>",
            blocks=True,
        ),
    ]
    matches: list[Match] = []
    for i, title in enumerate(titles):
        a = article(
            title,
            summaries[(i + seed) % len(summaries)] + " RLHF reward",
            authors=("An Author With An Exceedingly Long Name " * 3,) * 4,
            upvotes=7,
        )
        matches.append(match(a, "RLHF", "reward", "title", "change", score=10.0 - i))
    p = profile(keywords=("RLHF", "reward", "title", "change", "a keyword " * 8))
    r = Renderer(settings(list_name="The Extremely Long Named Research Digest Of Our Group"))
    for _ in range(2):  # the second time from compiled shapes
        email = both(r, request(p, matches))
        assert long_lines(email.text) == [], email.text
    # The release notes' heading and list items are lines of their own in the text part.
    notes = next(m for m in matches if "Release notes" in m.article.summary)
    assert notes is not None
    email = both(r, request(p, [notes]))
    lines = email.text.splitlines()
    assert "Release notes" in lines
    items = [line for line in lines if line.startswith("- Item ")]
    assert [line[:8] for line in items] == ["- Item 0", "- Item 1", "- Item 2", "- Item 3"][
        : len(items)
    ] and items


@hypothesis_settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "More",
                "like",
                "this:",
                "Paper",
                "page:",
                "-",
                "3.",
                "·",
                "",
                " ",
                "\t",
                "x" * 30,
                "https://digest.example/feedback/" + "A" * 51,
                "mailto:a@b.c",
                "<https://x.y/z>",
            ]
        ),
        min_size=1,
        max_size=8,
    )
)
def test_a_labelled_url_is_what_wrapping_gives_back(words: list[str]) -> None:
    # reflow skips wrap_line (and its cache) for "label: URL" lines: only where that
    # gives the line back unchanged.
    line = " ".join(words) + " https://digest.example/feedback/" + "B" * 60
    assert len(line) > WIDTH
    if labelled_url(line):
        assert wrap_line(line) == (line,)
    assert reflow(line) == "\n".join(wrap_line(line))
