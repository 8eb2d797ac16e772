"""Highlighted text as runs: alternately plain and marked pieces of a title or abstract. Pure.

The fast path's cards (:mod:`newsletter.render.cards`) hand highlights to the filled
template as runs of text instead of :class:`~newsletter.render.excerpts.Segment` objects;
these helpers make those runs, and the wrapped plain text, exactly as
:mod:`newsletter.render.views` would for text that needs no cleaning.
"""

from __future__ import annotations

from collections.abc import Sequence

from newsletter.render.excerpts import TEXT_WIDTH


def tidy(text: str) -> bool:
    """True when cleaning ``text`` changes nothing: printable, single spaces, no edge space.

    (A printable string holds no whitespace but the plain space.)
    """
    return (
        bool(text)
        and text.isprintable()
        and "  " not in text
        and text[0] != " "
        and text[-1] != " "
    )


def merge_spans(spans: Sequence[tuple[int, int]], length: int) -> list[tuple[int, int]]:
    """:func:`~newsletter.render.excerpts.merge_spans` (the union is the same in any order)."""
    out: list[tuple[int, int]] = []
    for s, e in sorted(spans):
        if s < 0:
            s = 0
        if e > length:
            e = length
        if s >= e:
            continue
        if out and s <= out[-1][1]:
            if e > out[-1][1]:
                out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


def text_runs(text: str, merged: list[tuple[int, int]], lo: int, hi: int, out: list[str]) -> bool:
    """:func:`~newsletter.render.excerpts.segments` of ``text[lo:hi]``, their texts appended
    to ``out``; whether the first one is highlighted."""
    pos = lo
    start = len(out)
    first_mark = False
    for s, e in merged:
        if s < lo:
            s = lo
        if e > hi:
            e = hi
        if s >= e:
            continue
        if s > pos:
            out.append(text[pos:s])
        elif len(out) == start:
            first_mark = True
        out.append(text[s:e])
        pos = e
    if pos < hi:
        out.append(text[pos:hi])
    return first_mark


def wrap_tidy(text: str) -> str:
    """``wrap_text(text)`` (textwrap at TEXT_WIDTH, words never broken) for text that
    :func:`tidy` accepts: single spaces between words, so a line is as many words as
    fit, and a longer word stands alone."""
    lines: list[str] = []
    line: list[str] = []
    size = -1
    for word in text.split(" "):
        if size + 1 + len(word) <= TEXT_WIDTH or not line:
            line.append(word)
            size += 1 + len(word)
        else:
            lines.append(" ".join(line))
            line = [word]
            size = len(word)
    lines.append(" ".join(line))
    return "\n".join(lines)


def add_plain(texts: list[str], first_mark: bool, text: str) -> None:
    """Append a plain run, merged into a plain one before it (as _clean_segments does)."""
    if texts and (len(texts) % 2 == 1) != first_mark:  # the last run is plain
        texts[-1] += text
    else:
        texts.append(text)
