"""Tokenising and normalising text for keyword matching.

Both the matcher's index and its reference implementation use these functions, so a
keyword and a text are always normalised the same way. Everything here is pure and
cached: a batch of entries repeats the same words many times.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import snowballstemmer

from newsletter.domain import Article, Field

# A word: letters and digits (any script), with combining marks, soft hyphens and
# zero-width joiners inside it, and apostrophes between letters ("don't", "Schrödinger's").
_MARKS = r"\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f"
_INVISIBLE = r"\u00ad\u200b-\u200d\u2060"  # soft hyphen, zero-width (non-)joiners
# Chinese and Japanese write words without spaces between them: each Han, Hiragana or
# Katakana character is a word of its own (with its sound marks), so a keyword of
# several is a phrase of consecutive characters and matches inside a longer run
# ("白宫" in "白宫提名艾伦为北约最高司令官", "機械学習" in "深層機械学習の新手法").
_CJK = (
    r"\u3040-\u30ff\u31f0-\u31ff"  # Hiragana, Katakana (and its phonetic extensions)
    r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # CJK ideographs, extension A, compatibility
    r"\uff66-\uff9f"  # half-width Katakana
    r"\U00020000-\U0003134f"  # CJK ideograph extensions B to G
)
_CJK_MARKS = r"\u3099\u309a\uff9e\uff9f"  # (han)dakuten, combining and half-width
_LETTER = rf"[^\W_{_CJK}]"  # a letter or digit of a script that spaces its words
_IN_WORD = rf"(?:{_LETTER}|[{_MARKS}{_INVISIBLE}])"
_WORD_RE = re.compile(
    rf"(?P<cjk>[{_CJK}][{_CJK_MARKS}{_MARKS}]*)|{_LETTER}{_IN_WORD}*(?:['’ʼ]{_LETTER}{_IN_WORD}*)*"
)
_POSSESSIVE_RE = re.compile(r"['’ʼ][sS]$")
_HYPHENS = frozenset("-\u2010\u2011")  # hyphen-minus, hyphen, non-breaking hyphen

# Snowball's English stop word list, folded (apostrophes removed); of the contractions
# only those that fold into no other word ("we'll" is "well", which stays a word).
_STOP_TEXT = """
    i me my myself we our ours ourselves you your yours yourself yourselves he him his
    himself she her hers herself it its itself they them their theirs themselves what
    which who whom this that these those am is are was were be been being have has had
    having do does did doing would should could ought a an the and but if or because as
    until while of at by for with about against between into through during before after
    above below to from up down in out on off over under again further then once here
    there when where why how all any both each few more most other some such no nor not
    only own same so than too very
    im youre hes shes theyre youve weve theyve youd hed theyd youll theyll isnt arent
    wasnt werent hasnt havent hadnt doesnt dont didnt wouldnt shant shouldnt cannot
    couldnt mustnt thats whos whats heres theres whens wheres
"""
STOP_WORDS: frozenset[str] = frozenset(_STOP_TEXT.split())

# British spellings whose American form differs in the middle of the word; matched as a
# prefix so "behavioural" and "behavioral" meet too.
_OUR_TEXT = """
    armour behaviour candour clamour colour endeavour favour flavour harbour honour humour
    labour neighbour odour rigour rumour savour splendour tumour valour vapour vigour
"""
_OUR_WORDS = {w: w[:-2] + "r" for w in _OUR_TEXT.split()}
_OUR_PREFIX_RE = re.compile("^(" + "|".join(sorted(_OUR_WORDS, key=len, reverse=True)) + ")")
# -ise/-isation -> -ize/-ization and -yse -> -yze, kept off short stems ("rise", "prise",
# "raise", "noise") where the two spellings are different words or no variant exists.
_ISE_RE = re.compile(r"^(.{3,}?)is(e|ed|es|er|ers|ing|able|ation|ations|ational)$")
_YSE_RE = re.compile(r"^(.{2,}?)ys(e|ed|es|er|ers|ing)$")

_STEMMER = snowballstemmer.stemmer("english")

#: Stands for the boundary between two authors or two categories: equal to no word.
BARRIER = "\x00"
#: Joins authors and categories into one text; spans in those fields point into it.
LIST_SEPARATOR = "; "


@dataclass(frozen=True, slots=True)
class Token:
    """One word of a text: its folded form and where it sits in the original text."""

    fold: str  # accent-folded, case-folded, apostrophes and possessive 's removed
    start: int  # [start, end) character offsets into the original text
    end: int
    join_next: bool  # may be written as one word with the next token ("multi-objective")


@lru_cache(maxsize=1 << 18)
def fold(word: str) -> str:
    """Case- and accent-fold one word: ``Schrödinger's`` -> ``schrodinger``."""
    word = _POSSESSIVE_RE.sub("", word)
    if word.isascii():
        return "".join(ch for ch in word.lower() if ch.isalnum())
    decomposed = unicodedata.normalize("NFKD", word)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    # casefold can produce new combining marks ("İ" -> "i̇"), so strip once more.
    again = unicodedata.normalize("NFKD", stripped.casefold())
    return "".join(ch for ch in again if ch.isalnum() and not unicodedata.combining(ch))


@lru_cache(maxsize=1 << 18)
def americanise(word: str) -> str:
    """Map the common British spellings of a folded word onto the American ones."""
    m = _OUR_PREFIX_RE.match(word)
    if m:
        return _OUR_WORDS[m.group(1)] + word[m.end() :]
    m = _ISE_RE.match(word)
    if m:
        return f"{m.group(1)}iz{m.group(2)}"
    m = _YSE_RE.match(word)
    if m:
        return f"{m.group(1)}yz{m.group(2)}"
    return word


@lru_cache(maxsize=1 << 18)
def term(folded: str) -> str:
    """The matching term of a folded word: American spelling, then the Snowball stem."""
    if folded == BARRIER:
        return BARRIER
    return str(_STEMMER.stemWord(americanise(folded)))


class Words(NamedTuple):
    """The words of a text as parallel lists: a :class:`Token` is one row. An index
    wants the columns, and building them directly skips a Token per word."""

    folds: list[str]
    starts: list[int]
    ends: list[int]
    joins: list[bool]


def _scan(text: str, offset: int, into: Words) -> None:
    """Append the words of ``text`` (shifted by ``offset``) to ``into``.

    Two neighbours may be joined into one word when only a hyphen separates them, or
    only whitespace and neither is a stop word ("multi objective", not "in form").
    """
    folds, starts, ends, joins = into
    prev_end = -1
    prev = ""  # the previous word of this text ("" before the first; "" after CJK)
    for m in _WORD_RE.finditer(text):
        f = fold(m.group())
        if not f:
            continue
        start = m.start()
        if prev:
            gap = text[prev_end:start].strip()
            if (len(gap) == 1 and gap in _HYPHENS) or (
                not gap and prev not in STOP_WORDS and f not in STOP_WORDS
            ):
                joins[-1] = m.lastgroup is None  # a CJK character joins no compound
        folds.append(f)
        starts.append(start + offset)
        ends.append(m.end() + offset)
        joins.append(False)
        prev_end = m.end()
        prev = "" if m.lastgroup else f


def _tokens(words: Words) -> list[Token]:
    return [Token(*row) for row in zip(*words, strict=True)]


def tokenize(text: str, offset: int = 0) -> list[Token]:
    """Split ``text`` into words with their spans (shifted by ``offset``).

    Two neighbours may be joined into one word when only a hyphen separates them, or
    only whitespace and neither is a stop word ("multi objective", not "in form").
    """
    words = Words([], [], [], [])
    _scan(text, offset, words)
    return _tokens(words)


def only_stop_words(folds: tuple[str, ...] | list[str]) -> bool:
    """True for a phrase that has no word but stop words (it would match everywhere)."""
    return all(f in STOP_WORDS for f in folds)


def field_text(article: Article, field: Field) -> str:
    """The text of one field, as the spans of a :class:`~newsletter.domain.Hit` see it."""
    if field == "title":
        return article.title
    if field == "abstract":
        return article.summary
    if field == "author":
        return LIST_SEPARATOR.join(article.authors)
    return LIST_SEPARATOR.join(article.categories)


def field_words(article: Article, field: Field) -> Words:
    """The words of one field; a barrier word separates two authors or categories."""
    words = Words([], [], [], [])
    if field in ("title", "abstract"):
        _scan(field_text(article, field), 0, words)
        return words
    items = article.authors if field == "author" else article.categories
    offset = 0
    for i, item in enumerate(items):
        if i:
            words.folds.append(BARRIER)
            words.starts.append(offset)
            words.ends.append(offset)
            words.joins.append(False)
            offset += len(LIST_SEPARATOR)
        _scan(item, offset, words)
        offset += len(item)
    return words


def field_tokens(article: Article, field: Field) -> list[Token]:
    """The words of one field as tokens (:func:`field_words`, one row each)."""
    return _tokens(field_words(article, field))


def _exact(folded: str) -> str:
    return folded


@dataclass(frozen=True, slots=True)
class Pattern:
    """A keyword's words, normalised once."""

    folds: tuple[str, ...]
    terms: tuple[str, ...]  # equal to folds when exact
    joins: tuple[bool, ...]  # word i may be written together with word i + 1
    exact: bool

    @property
    def never(self) -> bool:
        """An empty or stop-word-only keyword matches nothing."""
        return not self.folds or only_stop_words(self.folds)

    @property
    def normalise(self) -> Callable[[str], str]:
        return _exact if self.exact else term


def compile_pattern(text: str, *, exact: bool = False) -> Pattern:
    """Tokenise and normalise a keyword the way texts are."""
    tokens = tokenize(text)
    folds = tuple(t.fold for t in tokens)
    terms = folds if exact else tuple(term(f) for f in folds)
    return Pattern(folds, terms, tuple(t.join_next for t in tokens), exact)
