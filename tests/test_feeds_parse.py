"""Parsing and normalisation: every dialect to plain text, UTC and a stable dedupe key."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from newsletter.config import FetchSettings
from newsletter.errors import FeedError
from newsletter.ingest import (
    arxiv_id,
    canonical_link,
    dedupe_key,
    fetch_feed,
    html_to_text,
    normalise_title,
    parse_feed,
    split_author_list,
)
from tests.support.feeds import Item, atom

NOW = datetime(2026, 1, 10, 6, 0, tzinfo=UTC)

RSS20 = b"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>RSS 2.0</title><link>https://example.org/</link>
<item><title>Rss two &amp; more</title><link>https://example.org/a</link>
<guid isPermaLink="false">rss-a</guid>
<description>&lt;p&gt;One&lt;/p&gt;&lt;p&gt;Two&lt;/p&gt;</description>
<pubDate>Mon, 15 Jan 2024 10:00:00 +0200</pubDate><category>ml</category></item>
</channel></rss>"""

RSS091 = b"""<?xml version="1.0" encoding="iso-8859-1"?>
<rss version="0.91"><channel><title>RSS 0.91</title><link>https://example.org/</link>
<description>old</description><language>en</language>
<item><title>Caf\xe9 item</title><link>https://example.org/cafe</link>
<description>Latin-1 text: na\xefve</description></item>
</channel></rss>"""

RDF = b"""<?xml version="1.0"?>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"
 xmlns="http://purl.org/rss/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/">
<channel rdf:about="https://example.org/"><title>RDF</title><link>https://example.org/</link>
<description>rss 1.0</description></channel>
<item rdf:about="https://example.org/rdf-1"><title>RDF item</title>
<link>https://example.org/rdf-1</link><description>RDF body</description>
<dc:creator>Grace Hopper</dc:creator><dc:date>2024-01-15T10:00:00Z</dc:date></item>
</rdf:RDF>"""

ARXIV = b"""<?xml version='1.0' encoding='UTF-8'?>
<rss xmlns:arxiv="http://arxiv.org/schemas/atom" xmlns:dc="http://purl.org/dc/elements/1.1/"
 version="2.0"><channel><title>cs.LG updates on arXiv.org</title>
<link>http://rss.arxiv.org/rss/cs.LG</link><description>cs.LG</description>
<item><title>Bilevel Optimization, Revisited</title>
<link>https://arxiv.org/abs/2401.01234v2</link>
<description>arXiv:2401.01234v2 Announce Type: replace
Abstract: We study &lt;i&gt;bilevel&lt;/i&gt; problems.</description>
<guid isPermaLink="false">oai:arXiv.org:2401.01234v2</guid>
<category>cs.LG</category><category>math.OC</category>
<pubDate>Mon, 15 Jan 2024 00:00:00 -0500</pubDate>
<arxiv:announce_type>replace</arxiv:announce_type>
<dc:creator>Ada Lovelace, Charles Babbage and Alan Turing</dc:creator>
</item></channel></rss>"""


def test_html_to_text_strips_tags_decodes_entities_and_drops_scripts() -> None:
    html = (
        "<p>Deep&nbsp;<b>learning</b> &amp; <i>friends</i></p>"
        "<script>alert('x')</script><style>p{color:red}</style>"
        "<ul><li>one</li><li>two</li></ul>  tail &#8212; &eacute;"
    )
    assert html_to_text(html) == "Deep learning & friends one two tail — é"


def test_html_to_text_keeps_plain_text_and_removes_control_characters() -> None:
    assert html_to_text("a\x00b\x1b  c\n\td") == "ab c d"
    assert html_to_text("x < y and y > z") == "x < y and y > z"


def test_atom_entry_is_normalised_with_hf_extensions() -> None:
    doc = atom(
        Item(
            title="Reward  shaping\n for RLHF",
            id="tag:x,2026:paper-1",
            link="https://huggingface.co/papers?q=Reward+shaping",
            summary="<p>Abstract with <b>markup</b> &amp; entities.</p>",
            authors=["Ada Lovelace", "Alan Turing"],
            categories=["rl", "rl", "alignment"],
            upvotes=42,
            author_count=7,
        )
    )
    parsed = parse_feed(doc, now=NOW)
    assert parsed.version == "atom10" and not parsed.bozo
    (e,) = parsed.entries
    assert e.title == "Reward shaping for RLHF"
    assert e.summary == "Abstract with markup & entities."
    assert e.authors == ("Ada Lovelace", "Alan Turing")
    assert e.categories == ("rl", "alignment")
    assert e.guid == "tag:x,2026:paper-1"
    assert e.published == datetime(2024, 1, 15, 8, 0, tzinfo=UTC)
    assert e.extra == {"hf:upvotes": "42", "hf:authors": "7"}
    assert e.dedupe_key == "url:https://huggingface.co/papers?q=Reward+shaping"


def test_hf_extensions_are_found_under_any_declared_prefix() -> None:
    doc = atom(Item(title="T", id="i", upvotes=3, author_count=2), hf_prefix="papers")
    (e,) = parse_feed(doc, now=NOW).entries
    assert e.extra == {"hf:upvotes": "3", "hf:authors": "2"}


def test_sample_feed_keeps_upvotes_and_author_counts() -> None:
    root = Path(__file__).resolve().parent.parent
    parsed = parse_feed((root / "examples/feeds/daily-papers-000.atom").read_bytes(), now=NOW)
    assert len(parsed.entries) == 8
    first = parsed.entries[0]
    assert first.title == "Behavior Alignment via Reward Function Optimization"
    assert first.extra == {"hf:upvotes": "1", "hf:authors": "5"}


def test_arxiv_rss_entry() -> None:
    (e,) = parse_feed(ARXIV, now=NOW).entries
    assert e.summary == "We study bilevel problems."  # arXiv's announce prefix removed
    assert e.extra == {"arxiv:announce_type": "replace"}
    assert e.authors == ("Ada Lovelace", "Charles Babbage", "Alan Turing")
    assert e.categories == ("cs.LG", "math.OC")
    assert e.published == datetime(2024, 1, 15, 5, 0, tzinfo=UTC)
    assert e.dedupe_key == "arxiv:2401.01234"


@pytest.mark.parametrize(
    ("doc", "version", "title", "summary"),
    [
        (RSS20, "rss20", "Rss two & more", "One\nTwo"),  # two paragraphs: two lines
        (RSS091, "rss091u", "Café item", "Latin-1 text: naïve"),
        (RDF, "rss10", "RDF item", "RDF body"),
    ],
)
def test_every_dialect(doc: bytes, version: str, title: str, summary: str) -> None:
    parsed = parse_feed(doc, now=NOW)
    assert parsed.version == version
    (e,) = parsed.entries
    assert (e.title, e.summary) == (title, summary)
    assert e.link.startswith("https://example.org/")


def test_rss_dates_become_utc_and_rdf_creator_is_an_author() -> None:
    (rss,) = parse_feed(RSS20, now=NOW).entries
    assert rss.published == datetime(2024, 1, 15, 8, 0, tzinfo=UTC)
    (rdf,) = parse_feed(RDF, now=NOW).entries
    assert rdf.authors == ("Grace Hopper",)


def test_missing_or_unparseable_date_falls_back_to_fetch_time() -> None:
    doc = atom(Item(title="No date", id="a", published=None), Item(title="Bad", id="b"))
    doc = doc.replace(
        b"<published>2024-01-15T08:00:00Z</published>", b"<published>soon</published>"
    )
    a, b = parse_feed(doc, now=NOW).entries
    assert a.published == NOW and b.published == NOW


def test_guid_falls_back_to_link_then_to_a_hash_of_the_title() -> None:
    doc = atom(Item(title="Linked", link="https://example.org/x"), Item(title="Bare title"))
    linked, bare = parse_feed(doc, now=NOW).entries
    assert linked.guid == "https://example.org/x"
    assert bare.guid.startswith("title:") and len(bare.guid) == len("title:") + 32
    assert bare.dedupe_key == "title:bare title"
    again = parse_feed(doc, now=NOW).entries[1]
    assert again.guid == bare.guid  # stable across fetches


def test_plain_text_title_is_not_treated_as_markup() -> None:
    doc = atom(Item(title="Templates <T> in C++", id="t"))
    doc = doc.replace(b"<title>Templates", b'<title type="text">Templates')
    (e,) = parse_feed(doc, now=NOW).entries
    assert e.title == "Templates <T> in C++"


def test_entry_without_title_takes_the_start_of_its_summary() -> None:
    doc = atom(Item(title="", id="x", summary="Only an abstract. " * 20))
    (e,) = parse_feed(doc, now=NOW).entries
    assert e.title.startswith("Only an abstract.") and e.title.endswith("…")
    assert len(e.title) <= 121


ABSTRACT_AS_TITLE = (
    "Reinforcement Learning from Human Feedback (RLHF) has become a dominating strategy in "
    "steering Language Models (LMs) towards human values/goals. The key to the strategy is "
    "employing a reward model which can reflect a latent reward model with humans. While this "
    "strategy has proven to be effective, the training methodology requires a lot of human "
    "preference annotation to train it."
)


def test_entry_titled_without_a_letter_or_digit_is_skipped_as_junk() -> None:
    doc = atom(
        Item(title="·", id="sep-1", summary="Feb 6, 2016", link="https://example.org/?q=%C2%B7"),
        Item(title="— • —", id="sep-2"),
        Item(title="π", id="pi"),
        Item(title="3", id="three"),
    )
    parsed = parse_feed(doc, now=NOW)
    assert [e.title for e in parsed.entries] == ["π", "3"]
    assert parsed.skipped == 2


def test_abstract_in_the_title_moves_to_the_summary_and_its_first_sentence_titles_it() -> None:
    doc = atom(Item(title=ABSTRACT_AS_TITLE, id="a", summary="• 11 authors"))
    (e,) = parse_feed(doc, now=NOW).entries
    assert e.title == (
        "Reinforcement Learning from Human Feedback (RLHF) has become a dominating strategy in "
        "steering Language Models (LMs) towards human values/goals"
    )
    assert e.summary == ABSTRACT_AS_TITLE


def test_abstract_in_the_title_with_a_long_first_sentence_is_cut_at_a_word() -> None:
    text = "word " * 80 + "end. Second sentence here."
    doc = atom(Item(title=text, id="a", summary=""))
    (e,) = parse_feed(doc, now=NOW).entries
    assert e.title.endswith("word…") and len(e.title) <= 200
    assert e.summary == text.strip()


def test_long_title_over_a_real_summary_is_kept() -> None:
    summary = "A real abstract that says what the paper does and how, in more than a few words."
    doc = atom(Item(title=ABSTRACT_AS_TITLE, id="a", summary=summary))
    (e,) = parse_feed(doc, now=NOW).entries
    assert (e.title, e.summary) == (ABSTRACT_AS_TITLE, summary)


def test_sample_feed_with_junk_and_abstract_titles_reads_cleanly() -> None:
    root = Path(__file__).resolve().parent.parent
    parsed = parse_feed((root / "examples/feeds/daily-papers-002.atom").read_bytes(), now=NOW)
    assert parsed.skipped == 2  # the two "·" entries
    assert all(any(c.isalnum() for c in e.title) for e in parsed.entries)
    assert max(len(e.title) for e in parsed.entries) <= 200
    moved = [e for e in parsed.entries if len(e.summary) > 1000 and "authors" not in e.summary]
    assert any(e.title.startswith("We propose a goal-driven web navigation") for e in moved)


def test_unsafe_links_are_dropped() -> None:
    doc = atom(Item(title="x", id="x", link="javascript:alert(1)"))
    (e,) = parse_feed(doc, now=NOW).entries
    assert e.link == ""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://arxiv.org/abs/2401.01234v2", "2401.01234"),
        ("http://arxiv.org/pdf/2401.01234v1.pdf", "2401.01234"),
        ("oai:arXiv.org:2401.01234v3", "2401.01234"),
        ("arXiv:2312.12345", "2312.12345"),
        ("https://huggingface.co/papers/2401.01234", "2401.01234"),
        ("https://arxiv.org/abs/hep-th/9901001v2", "hep-th/9901001"),
        ("https://arxiv.org/abs/math.GT/0309136", "math.gt/0309136"),
        ("https://example.org/2401.01234", None),
        ("https://huggingface.co/papers?q=2401.01234", None),
    ],
)
def test_arxiv_ids(text: str, expected: str | None) -> None:
    assert arxiv_id(text) == expected


def test_arxiv_versions_share_a_dedupe_key() -> None:
    v1 = dedupe_key(guid="oai:arXiv.org:2401.01234v1", link="", title="A")
    v2 = dedupe_key(guid="x", link="https://arxiv.org/abs/2401.01234v2", title="A, revised")
    assert v1 == v2 == "arxiv:2401.01234"


def test_canonical_link() -> None:
    a = canonical_link("HTTP://Example.ORG:80/Paper/?utm_source=x&b=2&a=1&fbclid=z#section")
    b = canonical_link("https://example.org/Paper?a=1&b=2")
    assert a == b == "https://example.org/Paper?a=1&b=2"
    assert canonical_link("https://example.org/") == "https://example.org"
    assert canonical_link("https://example.org:8443/x") == "https://example.org:8443/x"


def test_normalised_title_ignores_case_accents_and_punctuation() -> None:
    assert normalise_title("  Schrödinger's  Cat: A Study! ") == "schrodinger s cat a study"


def test_long_keys_fit_their_columns() -> None:
    key = dedupe_key(guid="", link="https://example.org/" + "x" * 2000, title="t")
    assert len(key) <= 512


def test_author_lists_split_only_into_full_names() -> None:
    assert split_author_list("Ada Lovelace, Charles Babbage") == ["Ada Lovelace", "Charles Babbage"]
    assert split_author_list("Lovelace, Ada") == ["Lovelace, Ada"]


def test_local_file_with_and_without_file_scheme(tmp_path: Path) -> None:
    path = tmp_path / "feed.atom"
    path.write_bytes(atom(Item(title="Local", id="l")))
    for url in (str(path), f"file://{path}"):
        fetched = fetch_feed(url, FetchSettings(), now=NOW)
        assert fetched.status == "ok"
        assert [e.title for e in fetched.entries] == ["Local"]


def test_missing_local_file_is_a_feed_error(tmp_path: Path) -> None:
    with pytest.raises(FeedError, match="file not found"):
        fetch_feed(str(tmp_path / "nope.xml"), FetchSettings(), now=NOW)


def test_malformed_feed_with_entries_is_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "broken.atom"
    path.write_bytes(atom(Item(title="Still here", id="s")).replace(b"</feed>", b"<oops></feed>"))
    fetched = fetch_feed(str(path), FetchSettings(), now=NOW)
    assert fetched.status == "warning"
    assert fetched.warning and "malformed feed" in fetched.warning
    assert [e.title for e in fetched.entries] == ["Still here"]


def test_document_that_is_not_a_feed_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "page.html"
    path.write_bytes(b"<html><body><p>Not a feed <b>at all</p></html>")
    with pytest.raises(FeedError, match="not a feed"):
        fetch_feed(str(path), FetchSettings(), now=NOW)


def test_oversized_local_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.atom"
    path.write_bytes(atom(Item(title="x" * 5000, id="b")))
    with pytest.raises(FeedError, match="max_bytes"):
        fetch_feed(str(path), FetchSettings(max_bytes=1000), now=NOW)
