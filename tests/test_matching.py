"""The matching rules, one by one, each with the cases that must not match.

Every check runs through both the indexed :class:`Matcher` and ``reference_match``.
"""

from __future__ import annotations

import random
import unicodedata
from datetime import UTC, datetime, timedelta
from pathlib import Path

import feedparser
import pytest

from newsletter.domain import Article, Keyword, Match, Profile
from newsletter.matching import FIELD_FACTORS, Matcher, field_text
from newsletter.matching.reference import reference_match, reference_trending
from newsletter.profiles import read_profiles

T0 = datetime(2026, 1, 9, tzinfo=UTC)
ROOT = Path(__file__).resolve().parent.parent


def art(
    id: int = 1,
    title: str = "",
    summary: str = "",
    *,
    authors: tuple[str, ...] = (),
    categories: tuple[str, ...] = (),
    upvotes: int | None = None,
    published: datetime = T0,
) -> Article:
    return Article(
        id=id,
        title=title,
        summary=summary,
        link=f"https://example.org/{id}",
        authors=authors,
        categories=categories,
        published=published,
        first_seen=T0,
        upvotes=upvotes,
    )


def profile(*keywords: Keyword | str, exclude: tuple[Keyword | str, ...] = ()) -> Profile:
    def k(x: Keyword | str) -> Keyword:
        return x if isinstance(x, Keyword) else Keyword(x)

    return Profile(
        email="t@example.org",
        keywords=tuple(k(x) for x in keywords),
        exclude=tuple(k(x) for x in exclude),
    )


def run(articles: list[Article], p: Profile, **kw: object) -> list[Match]:
    fast = Matcher(articles).match(p, **kw)  # type: ignore[arg-type]
    assert fast == reference_match(articles, p, **kw)  # type: ignore[arg-type]
    return fast


def marked(keyword: Keyword | str, title: str) -> list[str]:
    """The pieces of ``title`` the keyword highlights (empty: no match)."""
    a = art(title=title)
    return [title[s:e] for m in run([a], profile(keyword)) for h in m.hits for s, e in h.spans]


# -- one rule each ---------------------------------------------------------------------


def test_case_insensitive() -> None:
    assert marked("rlhf", "Secrets of RLHF in LLMs") == ["RLHF"]
    assert marked("Diffusion Model", "a DIFFUSION MODEL for video") == ["DIFFUSION MODEL"]


def test_whole_words_only() -> None:
    assert marked("RL", "Dual RL: a unification") == ["RL"]
    assert marked("RL", "Fetch the URL and curl it") == []
    assert marked("agent", "Reagents in chemistry") == []
    assert marked("GAN", "Organic GANs") == ["GANs"]


def test_phrase_words_must_be_consecutive_and_in_order() -> None:
    assert marked("reward model", "A reward model for RLHF") == ["reward model"]
    assert marked("reward model", "The reward of the model") == []
    assert marked("reward model", "Model reward shaping") == []
    assert marked("reward model", "Reward modelling at scale") == ["Reward modelling"]


def test_inflections_match_through_stemming() -> None:
    assert marked("optimization", "Optimizing NOTEARS objectives") == ["Optimizing"]
    assert marked("optimization", "Policies optimized end to end") == ["optimized"]
    assert marked("agents", "An agent that plans") == ["agent"]
    assert marked("optimization", "Optical flow estimation") == []


def test_exact_keywords_are_not_stemmed_but_still_fold_case_and_accents() -> None:
    exact = Keyword("optimization", exact=True)
    assert marked(exact, "Optimizing NOTEARS objectives") == []
    assert marked(exact, "Bilevel OPTIMIZATION") == ["OPTIMIZATION"]
    assert marked(Keyword("Schrodinger", exact=True), "The Schrödinger bridge") == ["Schrödinger"]


def test_british_and_american_spellings_meet() -> None:
    assert marked("optimisation", "Bilevel Optimization") == ["Optimization"]
    assert marked("optimization", "Meta-Bayesian Optimisation") == ["Optimisation"]
    assert marked("behaviour", "Behavioral cloning") == ["Behavioral"]
    assert marked("analyze", "We analyse the loss") == ["analyse"]
    assert marked("rise", "The rize of agents") == []  # short stems are left alone


def test_hyphen_space_and_joined_forms_are_one() -> None:
    titles = ["Multi-Objective GFlowNets", "Multi Objective GFlowNets", "Multiobjective GFlowNets"]
    for keyword in ("multi-objective", "multi objective", "multiobjective"):
        for title in titles:
            assert marked(keyword, title) == [title.split(" G")[0]], (keyword, title)
    assert marked("pretraining", "Efficient pre-training of LLMs") == ["pre-training"]
    assert marked("pre-trained", "pretrained encoders") == ["pretrained"]


def test_joining_needs_a_hyphen_or_two_real_words() -> None:
    # Whitespace joins two words only when neither is a stop word: "in form" stays apart.
    assert marked("inform", "Papers in form and content") == []
    assert marked("inform", "Priors that in-form the policy") == ["in-form"]
    # Words separated by other punctuation are never joined.
    assert marked("multiobjective", "multi. Objective") == []


def test_the_second_word_of_a_phrase_may_come_by_any_rule() -> None:
    """A two-word keyword is looked for only where its second word can follow (its
    term in the field, or a joinable pair for it): every way of writing it still hits."""
    texts = ["reward multiobjective", "reward multi-objective", "reward multi objective"]
    for keyword in ("reward multiobjective", "reward multi-objective"):
        for text in texts:
            assert marked(keyword, f"On {text} agents") == [text], (keyword, text)
            assert marked(Keyword(keyword, exact=True), f"On {text} agents") == [text]
    assert marked("reward multiobjective", "reward multi. objective") == []
    assert marked("rewards pretraining", "Rewarding pre-training, rewards pre-train") == [
        "Rewarding pre-training",
        "rewards pre-train",
    ]
    assert marked("reward model", "reward and model, reward\u2011models") == ["reward\u2011models"]


def test_punctuation_between_the_words_of_a_phrase_is_ignored() -> None:
    assert marked("language model", "Language-Model agents") == ["Language-Model"]
    assert marked("gpt 4", "Evaluating GPT-4 and GPT4o") == ["GPT-4"]


def test_accents_are_folded() -> None:
    assert marked("Schrödinger", "The Schrodinger equation") == ["Schrodinger"]
    assert marked("Schrodinger", "The Schrödinger equation") == ["Schrödinger"]
    decomposed = unicodedata.normalize("NFD", "Naïve Bayes, revisited")
    assert marked("naive bayes", decomposed) == [decomposed.split(",")[0]]


def test_possessive_s_is_ignored() -> None:
    assert marked("schrodinger equation", "Schrödinger's equation") == ["Schrödinger's equation"]


def test_stop_word_only_keyword_never_matches() -> None:
    assert marked("the of", "The theory of the of") == []
    assert marked("the", "The theory") == []


def test_field_restricts_the_keyword() -> None:
    a = art(title="Diffusion policies", summary="We use a reward model.")
    assert run([a], profile(Keyword("reward", field="title"))) == []
    [m] = run([a], profile(Keyword("reward", field="abstract")))
    assert m.matched == (("reward", "abstract"),)
    b = art(title="x", authors=("Ada Lovelace",), categories=("cs.LG",))
    assert [
        h.field for m in run([b], profile(Keyword("Lovelace", field="author"))) for h in m.hits
    ] == ["author"]
    assert run([b], profile(Keyword("Lovelace", field="category"))) == []
    assert run([b], profile(Keyword("cs.LG", field="category")))[0].matched == (
        ("cs.LG", "category"),
    )


def test_exclude_removes_an_entry_outright() -> None:
    survey = art(1, "A survey of RLHF", upvotes=99)
    paper = art(2, "RLHF without tears")
    assert [m.article.id for m in run([survey, paper], profile("RLHF", exclude=("survey",)))] == [2]
    # The same rules apply: stems, joins, fields.
    assert run([art(3, "Surveying RLHF")], profile("RLHF", exclude=("survey",))) == []
    only_abstract = profile("RLHF", exclude=(Keyword("survey", field="abstract"),))
    assert [m.article.id for m in run([survey], only_abstract)] == [1]


def test_authors_and_categories_are_matched_one_name_at_a_time() -> None:
    a = art(
        title="x", authors=("Ada Lovelace", "Alan Turing"), categories=("cs.LG", "Machine Learning")
    )
    [m] = run([a], profile("Turing", "machine learning"))
    assert field_text(a, "author") == "Ada Lovelace; Alan Turing"
    hits = {(h.keyword, h.field): h.spans for h in m.hits}
    assert hits == {("Turing", "author"): ((19, 25),), ("machine learning", "category"): ((7, 23),)}
    # A phrase never runs from one name into the next.
    assert run([a], profile("Lovelace Alan")) == []


# -- score, order, explanation -----------------------------------------------------------


def test_score_sums_weight_times_field_factor_over_the_fields_hit() -> None:
    a = art(
        title="RLHF for agents",
        summary="We study RLHF and RLHF again.",
        authors=("R. Lhf",),
        categories=("RLHF",),
    )
    [m] = run([a], profile(Keyword("RLHF", weight=2), "agent"))
    # Each keyword counts once per field, however often it occurs there.
    assert m.score == 2 * (3 + 1 + 1.5) + 1 * 3
    assert FIELD_FACTORS == {"title": 3.0, "abstract": 1.0, "author": 2.0, "category": 1.5}
    assert [(h.keyword, h.field, h.weight) for h in m.hits] == [
        ("RLHF", "title", 2.0),
        ("RLHF", "abstract", 2.0),
        ("RLHF", "category", 2.0),
        ("agent", "title", 1.0),
    ]


def test_a_title_hit_outranks_an_abstract_hit() -> None:
    in_title = art(1, "Bilevel optimization", "Nothing here.")
    in_abstract = art(2, "Nothing here", "A bilevel optimization method.")
    assert [
        m.article.id for m in run([in_abstract, in_title], profile("bilevel optimization"))
    ] == [1, 2]


def test_ties_go_to_upvotes_then_recency_then_id() -> None:
    day = timedelta(days=1)
    articles = [
        art(1, "RLHF", upvotes=None, published=T0),
        art(2, "RLHF", upvotes=5, published=T0 - day),
        art(3, "RLHF", upvotes=5, published=T0),
        art(4, "RLHF", upvotes=0, published=T0),
        art(5, "RLHF", upvotes=None, published=T0 + day),
        art(6, "RLHF", upvotes=None, published=T0),
    ]
    assert [m.article.id for m in run(articles, profile("RLHF"))] == [3, 2, 4, 5, 1, 6]


def test_spans_point_into_the_original_text_for_highlighting() -> None:
    a = art(
        title="Multi-Objective RL: Schrödinger's bridges",
        summary="We revisit multi objective RL, and multiobjective RL.",
    )
    [m] = run([a], profile("multi-objective RL", "schrodinger bridge"))
    texts = [(h.field, [field_text(a, h.field)[s:e] for s, e in h.spans]) for h in m.hits]
    assert texts == [
        ("title", ["Multi-Objective RL"]),
        ("abstract", ["multi objective RL", "multiobjective RL"]),
        ("title", ["Schrödinger's bridges"]),
    ]


def test_candidates_and_limit() -> None:
    articles = [art(i, "RLHF", upvotes=i) for i in range(1, 6)]
    p = profile("RLHF")
    assert [m.article.id for m in run(articles, p, limit=2)] == [5, 4]
    assert [m.article.id for m in run(articles, p, candidates={1, 3, 99})] == [3, 1]
    assert run(articles, p, candidates=set()) == []
    assert run(articles, p, limit=0) == []
    assert len(run(articles, p)) == 5  # no limit by default


def test_keywords_are_compiled_once_and_shared_across_profiles() -> None:
    articles = [art(1, "RLHF and reward models"), art(2, "Diffusion")]
    matcher = Matcher(articles)
    first = matcher.match(profile("RLHF", "reward model"))
    second = matcher.match(profile(Keyword("RLHF", weight=3), "diffusion"))
    assert [m.score for m in first] == [6.0]
    assert [(m.article.id, m.score) for m in second] == [(1, 9.0), (2, 3.0)]


def test_duplicate_article_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="appears twice"):
        Matcher([art(1), art(1)])


def test_sample_profiles_on_the_sample_feeds_agree_with_the_reference() -> None:
    """The bundled profiles hit the bundled feeds, and both implementations agree (a
    keyword-less profile, subscribers/top10.yaml, through its trending picks)."""
    articles: list[Article] = []
    for path in sorted((ROOT / "examples" / "feeds").glob("*.atom")):
        for e in feedparser.parse(str(path)).entries:
            articles.append(
                art(
                    len(articles) + 1,
                    e.title,
                    e.get("summary", ""),
                    upvotes=int(e.get("hf_upvotes", 0)),
                )
            )
    loaded = read_profiles(ROOT / "subscribers")
    matcher = Matcher(articles)
    assert any(not p.keywords for p in loaded.profiles)
    for p in loaded.profiles:
        if p.trending:
            picks = matcher.trending(p)
            assert picks, f"{p.email} has no trending picks in the sample feeds"
            assert picks == reference_trending(articles, p)
        if not p.keywords:
            continue
        fast = matcher.match(p)
        assert fast, f"{p.email} matches nothing in the sample feeds"
        assert fast == reference_match(articles, p)


def test_every_article_a_candidate_is_the_same_as_no_filter() -> None:
    articles = [art(1, "Bilevel optimization"), art(2, "RLHF at scale", "reward models")]
    m = Matcher(articles)
    p = profile("bilevel optimization", "reward")
    assert m.match(p, candidates={1, 2}) == m.match(p) == reference_match(articles, p)
    assert [x.article.id for x in m.match(p, candidates={2})] == [2]


# -- the array ranking: many entries, ties, limits, candidate sets ------------------------


def _many(n: int, seed: int) -> list[Article]:
    """``n`` entries from a small vocabulary, with few distinct upvotes and dates: scores
    and tie-break keys repeat a lot, which is what the top-``limit`` selection must get
    exactly right."""
    rng = random.Random(seed)
    words = ["reward", "model", "agents", "diffusion", "RLHF", "bilevel", "optimisation"]
    return [
        art(
            i,
            " ".join(rng.sample(words, rng.randint(0, 3))),
            " ".join(rng.choices(words, k=rng.randint(0, 6))),
            authors=tuple(rng.sample(["Ada Reward", "Alan Model"], rng.randint(0, 2))),
            upvotes=rng.choice([None, 0, 3, 3, 7]),
            published=T0 - timedelta(hours=rng.choice([0, 0, 5])),
        )
        for i in rng.sample(range(1, 10_000), n)
    ]


@pytest.mark.parametrize("seed", range(4))
def test_top_limit_of_many_tied_entries_is_the_reference_prefix(seed: int) -> None:
    articles = _many(300, seed)
    matcher = Matcher(articles)
    profiles = [
        profile("reward", "model"),
        profile(Keyword("RLHF", weight=2.0), "agents", exclude=("diffusion",)),
        profile("bilevel optimization", Keyword("reward", weight=0.5, field="author")),
        profile(*(Keyword(w, weight=1.5) for w in ("model", "agent", "diffusion"))),
    ]
    for p in profiles:
        full = reference_match(articles, p)
        assert matcher.match(p) == full
        for limit in (0, 1, 2, 5, 10, 37, 299, 1000):
            assert matcher.match(p, limit=limit) == full[:limit], limit


def test_candidate_sets_of_every_kind_agree_and_a_shared_one_is_reused() -> None:
    articles = _many(120, 7)
    matcher = Matcher(articles)
    ids = [a.id for a in articles]
    window = frozenset(ids[::3]) | {123_456}  # an id outside the batch is ignored
    p = profile("reward", "agents")
    q = profile("model", exclude=("reward",))
    for candidates in (window, set(window), list(window), frozenset(ids), frozenset()):
        for prof in (p, q, p):  # the same frozenset again: the remembered mask
            got = matcher.match(prof, candidates=candidates, limit=7)
            assert got == reference_match(articles, prof, candidates=candidates, limit=7)
    assert all(m.article.id in window for m in matcher.match(p, candidates=window))


def test_scores_are_plain_floats_and_hits_keep_the_weight_as_given() -> None:
    articles = [art(1, "RLHF reward", "reward"), art(2, "reward", upvotes=3)]
    matcher = Matcher(articles)
    for weight in (3, 3.0, 2, 2.0):
        p = profile(Keyword("reward", weight=weight), "RLHF")
        got = matcher.match(p, limit=5)
        assert got == reference_match(articles, p, limit=5)
        assert all(type(m.score) is float for m in got)
        assert [type(h.weight) for m in got for h in m.hits if h.keyword == "reward"] == [
            type(weight)
        ] * 3


def test_zero_and_negative_weights_rank_as_the_reference_does() -> None:
    """Profiles from YAML have weights above 0; the matcher still follows the rules."""
    articles = _many(80, 3)
    matcher = Matcher(articles)
    for p in (
        profile(Keyword("reward", weight=0.0)),
        profile(Keyword("reward", weight=-1.0), "model"),
        profile(Keyword("model", weight=-2.0), Keyword("agents", weight=0.0), "reward"),
    ):
        for limit in (None, 3, 20):
            assert matcher.match(p, limit=limit) == reference_match(articles, p, limit=limit)


def test_an_empty_batch_matches_nothing() -> None:
    matcher = Matcher([])
    assert matcher.match(profile("reward"), limit=3) == []
    assert matcher.match(profile("reward"), candidates=frozenset({1})) == []
