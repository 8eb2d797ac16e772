"""Feed text made plain: markup stripped, control characters dropped, sentences found.

Shared by every source type, so stored titles and abstracts are plain text however they
arrived (HTML in Atom, plain strings in JSON).
"""

from __future__ import annotations

import logging
import re
from html.parser import HTMLParser

log = logging.getLogger(__name__)

# The end of a sentence: . ! or ? before white space and a capital, digit or opening mark.
_SENTENCE_END_RE = re.compile(r"[.!?](?=\s+[\"'“‘(\[]?[A-Z0-9])")
_CONTROL = {c: None for c in range(0x20) if chr(c) not in "\t\n\r"} | {0x7F: None}
_CONTROL.update({c: None for c in range(0x80, 0xA0)})
_DROP_TAGS = frozenset({"script", "style", "template", "noscript", "head", "title"})
_BREAK_TAGS = frozenset(
    {
        "p", "br", "div", "li", "ul", "ol", "tr", "td", "th", "table", "blockquote", "pre",
        "h1", "h2", "h3", "h4", "h5", "h6", "hr", "section", "article", "dd", "dt",
    }
)  # fmt: skip


def clean_text(value: object) -> str:
    """Collapse whitespace and drop control characters (they break headers and PostgreSQL)."""
    if not isinstance(value, str):
        return ""
    return " ".join(value.translate(_CONTROL).split())


def html_to_text(value: str, *, blocks: bool = False) -> str:
    """Visible text of an HTML fragment: tags stripped, entities decoded, scripts dropped.

    One line, unless ``blocks``: then headings, paragraphs and list items (``- `` before
    each) stay lines of their own, joined by "\n" ("<h1>Changes</h1><ul><li>Add x" is
    "Changes\n- Add x", not "Changes Add x"); line breaks in the markup's text itself
    are white space, as a browser shows them. Titles and names are one line; summaries
    keep their blocks for the plain-text part of the email.
    """
    if "<" not in value and "&" not in value:
        return clean_text(value)
    parser = _TextExtractor(bullets=blocks)
    try:
        parser.feed(value)
        parser.close()
    except Exception:  # html.parser is lenient, but a pathological input must not escape
        log.debug("html.parser gave up; keeping what it read", exc_info=True)
    text = "".join(parser.parts)
    if not blocks:
        return clean_text(text.replace(_BLOCK, " "))
    lines = (clean_text(line) for line in text.split(_BLOCK))
    return "\n".join(line for line in lines if line and line != "-")


_BLOCK = "\x00"  # a block boundary while parsing (control characters go in clean_text)


class _TextExtractor(HTMLParser):
    def __init__(self, *, bullets: bool) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0
        self._bullet = _BLOCK + "- " if bullets else _BLOCK

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _DROP_TAGS:
            self._skip += 1
        elif tag == "li":
            self.parts.append(self._bullet)
        elif tag in _BREAK_TAGS:
            self.parts.append(_BLOCK)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BREAK_TAGS:
            self.parts.append(_BLOCK)

    def handle_endtag(self, tag: str) -> None:
        if tag in _DROP_TAGS:
            self._skip = max(0, self._skip - 1)
        elif tag in _BREAK_TAGS:
            self.parts.append(_BLOCK)

    def handle_data(self, data: str) -> None:
        if not self._skip:
            # NUL is the block mark here; clean_text would drop it from the text anyway.
            self.parts.append(data.replace(_BLOCK, ""))


def first_sentence(text: str, limit: int) -> str:
    """The first sentence of ``text`` (without its full stop) if it fits in ``limit``
    characters, else the text cut at a word boundary with "…"."""
    end = _SENTENCE_END_RE.search(text)
    if end is not None and end.end() <= limit:
        sentence = text[: end.end()]
        return sentence[:-1] if sentence.endswith(".") else sentence
    return shorten(text, limit - 1)  # room for the "…"


def shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:") + "…"


def split_author_list(text: str) -> list[str]:
    """Split "Ada Lovelace, Charles Babbage and Alan Turing" (arXiv's dc:creator).

    "Lovelace, Ada" stays one name: a comma splits only when every part is a full name.
    """
    parts = [p.strip() for p in re.split(r",|;|\band\b|&", text)]
    parts = [p for p in parts if p]
    if len(parts) > 1 and all(" " in p for p in parts):
        return parts
    return [text] if text else []
