"""The indexed matcher gives exactly what the plain reference gives, on random input.

Words come from a small vocabulary with accents, hyphens, inflections, British and
American spellings and stop words, so that keywords do match and the join rules fire.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from unicodedata import category

from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.domain import FIELDS, Article, Keyword, Profile
from newsletter.matching import Matcher, field_text
from newsletter.matching.reference import reference_match, reference_trending

# Groups of words that interact under the rules: inflections, spellings, joins, accents.
GROUPS = [
    ["reward", "rewards", "rewarding", "s", "reward-s"],
    ["multi", "objective", "objectives", "multiobjective", "multi-objective"],
    ["optimization", "optimisation", "optimizing", "optimise", "optimiser"],
    ["Schrödinger", "Schrodinger", "schrödinger's", "equation"],
    ["RL", "URL", "RLHF", "rlhf", "RL-HF"],
    ["the", "of", "a", "in", "form", "inform", "informs"],
    ["pre", "training", "pretraining", "pre-training", "pretrained"],
    ["GPT", "4", "GPT-4", "gpt4"],
    ["learn", "learning", "learns", "ing", "reinforcement"],
    ["model", "models", "modelling", "modeling", "behaviour", "behavioral"],
    ["Café", "cafe", "naïve", "naive", "agent", "agents", "agentic"],
    # CJK: each character a word, so keywords match inside runs (and beside Latin words).
    ["白宫", "白宫提名艾伦", "经济", "全球经济恢复放缓", "機械学習", "深層機械学習の新手法"],
    ["学習", "AI研究", "GPT-4模型", "ガ", "ｶﾞ", "カ\u3099", "トランスフォーマー"],
]
WORDS = sorted({w for group in GROUPS for w in group})
SEPARATORS = [" ", " ", " ", "-", ", ", ". ", " - ", "/", "'s ", " (", ") ", "\u2011"]
NAMES = ["Ada Lovelace", "Émilie du Châtelet", "Alan Turing", "Grace Hopper", "Turing"]
CATEGORIES = ["cs.LG", "Reinforcement Learning", "multi-objective", "RL", "stat.ML"]


@st.composite
def vocabularies(draw: st.DrawFn) -> list[str]:
    """A few groups and a few stray words of its own per example, so that texts and
    keywords share words often and the rules meet each other."""
    groups = draw(st.lists(st.sampled_from(GROUPS), min_size=1, max_size=2))
    strays = draw(st.lists(st.sampled_from(WORDS), max_size=3))
    return sorted({w for g in groups for w in g} | set(strays))


@st.composite
def texts(draw: st.DrawFn, vocab: list[str], max_words: int = 14) -> str:
    n = draw(st.integers(0, max_words))
    parts: list[str] = []
    for i in range(n):
        if i:
            parts.append(draw(st.sampled_from(SEPARATORS)))
        parts.append(draw(st.sampled_from(vocab)))
    return "".join(parts)


@st.composite
def articles(draw: st.DrawFn, vocab: list[str], max_n: int = 7) -> list[Article]:
    n = draw(st.integers(0, max_n))
    ids = draw(st.lists(st.integers(1, 200), min_size=n, max_size=n, unique=True))
    base = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        Article(
            id=i,
            title=draw(texts(vocab, 6)),
            summary=draw(texts(vocab)),
            link=f"https://example.org/{i}",
            authors=tuple(draw(st.lists(st.sampled_from(NAMES), max_size=3))),
            categories=tuple(draw(st.lists(st.sampled_from(CATEGORIES), max_size=2))),
            published=base + timedelta(days=draw(st.integers(0, 2))),
            first_seen=base,
            upvotes=draw(st.none() | st.integers(0, 3) | st.sampled_from([57, 500])),
        )
        for i in ids
    ]


@st.composite
def keywords(draw: st.DrawFn, vocab: list[str]) -> Keyword:
    n = draw(st.integers(1, 3))
    parts = [draw(st.sampled_from(vocab))]
    for _ in range(n - 1):
        parts.append(draw(st.sampled_from([" ", "-", " "])))
        parts.append(draw(st.sampled_from(vocab)))
    return Keyword(
        term="".join(parts),
        weight=draw(st.sampled_from([0.5, 1.0, 1.0, 2.0, 3.0, 2])),
        exact=draw(st.booleans()),
        field=draw(st.none() | st.none() | st.sampled_from(FIELDS)),
    )


@st.composite
def quoted(draw: st.DrawFn, batch: list[Article]) -> Keyword:
    """A keyword cut out of an article's text, its words re-spaced, re-hyphenated, run
    together or split: it matches, often through the joining rules."""
    article = draw(st.sampled_from(batch))
    words = re.findall(r"[\w'’]+", f"{article.title} {article.summary}")
    if not words:
        return draw(keywords(["reward"]))
    start = draw(st.integers(0, len(words) - 1))
    cut = words[start : start + draw(st.integers(1, 3))]
    first = cut[0]
    if len(first) > 1 and draw(st.booleans()):
        # Split a word in two: the text has it as one word (rule 2).
        at = draw(st.integers(1, len(first) - 1))
        cut[:1] = [first[:at], first[at:]]
    parts = [cut[0]]
    for word in cut[1:]:
        parts.append(draw(st.sampled_from([" ", "-", ""])))
        parts.append(word)
    return Keyword(
        term="".join(parts),
        weight=draw(st.sampled_from([1.0, 2.0])),
        exact=draw(st.booleans()),
        field=draw(st.none() | st.sampled_from(FIELDS)),
    )


@st.composite
def profiles(draw: st.DrawFn, vocab: list[str], batch: list[Article]) -> Profile:
    kw = keywords(vocab) | quoted(batch) if batch else keywords(vocab)
    return Profile(
        email="p@example.org",
        keywords=tuple(draw(st.lists(kw, min_size=1, max_size=5))),
        exclude=tuple(draw(st.lists(keywords(vocab), max_size=2))),
        trending=draw(st.none() | st.integers(1, 4)),
    )


@settings(max_examples=200, deadline=None)
@given(data=st.data(), vocab=vocabularies())
def test_matcher_equals_reference(data: st.DataObject, vocab: list[str]) -> None:
    batch = data.draw(articles(vocab))
    group = data.draw(st.lists(profiles(vocab, batch), min_size=1, max_size=3))
    matcher = Matcher(batch)
    ids = [a.id for a in batch]
    # Several profiles on one matcher, so its caches are shared as in production.
    for profile in group:
        # Sets, and frozensets, which the matcher remembers as masks across profiles.
        some_ids = st.sampled_from(ids)
        candidates = data.draw(
            st.none() | st.sets(some_ids) | st.frozensets(some_ids) if ids else st.none()
        )
        limit = data.draw(st.none() | st.integers(0, 4))
        weight = data.draw(st.sampled_from([0.0, 0.0, 0.5, 1.0, 3.0]))
        fast = matcher.match(profile, candidates=candidates, limit=limit, popularity_weight=weight)
        slow = reference_match(
            batch, profile, candidates=candidates, limit=limit, popularity_weight=weight
        )
        assert fast == slow
        skip = {m.article.id for m in fast}
        assert matcher.trending(profile, candidates=candidates, skip=skip) == (
            reference_trending(batch, profile, candidates=candidates, skip=skip)
        )


@settings(max_examples=150, deadline=None)
@given(data=st.data(), vocab=vocabularies())
def test_two_word_keywords_equal_reference(data: st.DataObject, vocab: list[str]) -> None:
    """Two-word keywords skip the fields where their second word cannot follow: the
    fields left out must be exactly those the reference finds nothing in."""
    batch = data.draw(articles(vocab, max_n=10))
    words = st.sampled_from(vocab)
    kws = data.draw(
        st.lists(
            st.builds(
                Keyword,
                term=st.builds(
                    lambda a, sep, b: f"{a}{sep}{b}", words, st.sampled_from([" ", "-"]), words
                ),
                exact=st.booleans(),
                field=st.none() | st.sampled_from(FIELDS),
            ),
            min_size=1,
            max_size=4,
        )
    )
    matcher = Matcher(batch)
    for kw in kws:
        p = Profile(email="p@example.org", keywords=(kw,))
        assert matcher.match(p) == reference_match(batch, p), kw


@settings(max_examples=40, deadline=None)
@given(data=st.data(), vocab=vocabularies())
def test_top_limit_of_a_larger_batch_equals_reference(
    data: st.DataObject, vocab: list[str]
) -> None:
    """Enough entries for the matcher to narrow the ranking down before sorting it."""
    batch = data.draw(articles(vocab, max_n=40))
    matcher = Matcher(batch)
    for profile in data.draw(st.lists(profiles(vocab, batch), min_size=1, max_size=2)):
        slow = reference_match(batch, profile)
        for limit in (1, 2, 3, 5, 8):
            assert matcher.match(profile, limit=limit) == slow[:limit]


@settings(max_examples=60, deadline=None)
@given(data=st.data(), vocab=vocabularies())
def test_every_hit_span_points_at_a_word_of_its_field(
    data: st.DataObject, vocab: list[str]
) -> None:
    batch = data.draw(articles(vocab))
    profile = data.draw(profiles(vocab, batch))
    for match in Matcher(batch).match(profile):
        assert match.hits
        for hit in match.hits:
            text = field_text(match.article, hit.field)
            for start, end in hit.spans:
                assert 0 <= start < end <= len(text)
                # (a word may end in a combining mark: the dakuten of "カ\u3099")
                last = text[end - 1]
                assert text[start].isalnum() and (last.isalnum() or category(last) == "Mn")
