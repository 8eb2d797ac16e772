"""Chinese and Japanese keywords match inside runs of text written without spaces, in
the matcher and its reference alike, and the card highlights them; Latin words are
tokenised exactly as before."""

from __future__ import annotations

import re

import pytest

from newsletter.domain import Keyword, Match, Profile
from newsletter.matching import Matcher
from newsletter.matching.reference import reference_match
from newsletter.matching.textnorm import tokenize
from newsletter.render import Renderer
from tests.support.digests import ABSTRACT, article, request, settings

CASES = [
    # (keyword, title, summary, field, the highlighted text)
    ("白宫", "白宫提名艾伦为北约最高司令官", "据报道。", "title", "白宫"),
    ("北约", "白宫提名艾伦为北约最高司令官", "据报道。", "title", "北约"),
    ("经济", "世界新闻", "全球经济恢复放缓，专家称。", "abstract", "经济"),
    ("機械学習", "深層機械学習の新手法", "概要。", "title", "機械学習"),
    (
        "トランスフォーマー",
        "新しいモデル",
        "トランスフォーマーモデルの研究です。",
        "abstract",
        "トランスフォーマー",
    ),
    ("学習", "強化学習による制御", "本稿では。", "title", "学習"),
    ("研究", "AI研究の動向", "まとめ。", "title", "研究"),
    ("AI", "AI研究の動向", "まとめ。", "title", "AI"),
]


def _profile(*terms: str) -> Profile:
    return Profile(email="li@example.org", keywords=tuple(Keyword(t) for t in terms))


def _hits(matches: list[Match]) -> list[tuple[int, str, str, tuple[tuple[int, int], ...]]]:
    return [(m.article.id, h.keyword, h.field, h.spans) for m in matches for h in m.hits]


@pytest.mark.parametrize(("kw", "title", "summary", "field", "marked"), CASES)
def test_a_cjk_keyword_matches_inside_a_run(
    kw: str, title: str, summary: str, field: str, marked: str
) -> None:
    a = article(title, summary)
    other = article("全球新闻摘要", "无关内容。")  # no match: shares no run of characters
    got = Matcher([a, other]).match(_profile(kw))
    assert [m.article.id for m in got] == [a.id]
    (hit,) = got[0].hits
    text = title if field == "title" else summary
    assert hit.field == field and [text[s:e] for s, e in hit.spans] == [marked]
    assert _hits(reference_match([a, other], _profile(kw))) == _hits(got)


def test_characters_must_be_consecutive() -> None:
    # 白 and 宫 both occur, but not side by side: a phrase, not a bag of characters.
    a = article("宫殿与白色的墙", "白天参观宫殿。")
    assert Matcher([a]).match(_profile("白宫")) == []
    assert reference_match([a], _profile("白宫")) == []


def test_the_card_highlights_the_cjk_keyword() -> None:
    a = article("白宫提名艾伦为北约最高司令官", "全球经济恢复放缓。" + ABSTRACT)
    matches = Matcher([a]).match(_profile("白宫", "经济"))
    r = Renderer(settings())
    email = r.render(request(_profile("白宫", "经济"), matches))
    assert email is not None
    marks = re.findall(r"<mark[^>]*>(.*?)</mark>", email.html)
    assert "白宫" in marks and "经济" in marks
    ref = r.reference_render(request(_profile("白宫", "经济"), matches))
    assert ref is not None and ref.text == email.text
    assert "Matched: 白宫 (title), 经济 (abstract)" in email.text


# The word pattern before CJK characters were words of their own: on text without them,
# the tokens must be the same.
_OLD_MARKS = r"\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f"
_OLD_IN_WORD = rf"(?:[^\W_]|[{_OLD_MARKS}\u00ad\u200b-\u200d\u2060])"
_OLD_WORD = re.compile(rf"[^\W_]{_OLD_IN_WORD}*(?:['’ʼ][^\W_]{_OLD_IN_WORD}*)*")


@pytest.mark.parametrize(
    "text",
    [
        ABSTRACT,
        "Schrödinger's multi-objective GPT-4 pre\u2011training, naïve Café don't RL-HF",
        "Ελληνικά κείμενα και русский текст, عربي, हिन्दी, 한국어 문장",
        "soft\u00adhyphen zero\u200bwidth e\u0301clair",
    ],
)
def test_latin_and_other_scripts_tokenise_as_before(text: str) -> None:
    spans = [(t.start, t.end) for t in tokenize(text)]
    old = [(m.start(), m.end()) for m in _OLD_WORD.finditer(text) if tokenize(m.group())]
    assert spans == old
