"""Excerpts: which part of an abstract a card shows, and its highlights as runs.

Pure and cached where every subscriber's copy of an entry gives the same answer (the
cut of an abstract, its wrapped plain text); highlights differ per subscriber and are
split into :class:`Segment` runs the templates escape one by one.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

ABSTRACT_CHARS = 600  # trim target; a sentence may end up to ABSTRACT_SLACK later
ABSTRACT_SLACK = 80
TEXT_WIDTH = 72
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s)")
_SPACE = re.compile(r"\s")


@dataclass(frozen=True, slots=True)
class Segment:
    """A run of text, highlighted (``<mark>``) or not."""

    text: str
    mark: bool = False


def merge_spans(spans: Sequence[tuple[int, int]], length: int) -> list[tuple[int, int]]:
    """Sorted, clipped to ``[0, length)``, overlapping or touching spans merged."""
    out: list[tuple[int, int]] = []
    for start, end in sorted((max(0, s), min(length, e)) for s, e in spans):
        if start >= end:
            continue
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def segments(
    text: str, spans: Sequence[tuple[int, int]], start: int = 0, end: int | None = None
) -> list[Segment]:
    """``text[start:end]`` split into plain and highlighted runs (spans are absolute)."""
    end = len(text) if end is None else end
    out: list[Segment] = []
    pos = start
    for s, e in merge_spans(spans, len(text)):
        s, e = max(s, start), min(e, end)
        if s >= e:
            continue
        if s > pos:
            out.append(Segment(text[pos:s]))
        out.append(Segment(text[s:e], True))
        pos = e
    if pos < end:
        out.append(Segment(text[pos:end]))
    return out


def _word_cut(text: str, pos: int, *, forward: bool) -> int:
    """The nearest whitespace at or after (before) ``pos``, so no word is split."""
    if forward:
        m = _SPACE.search(text, pos)
        return m.start() if m else len(text)
    cut = max(text.rfind(" ", 0, pos), text.rfind("\n", 0, pos))
    return cut if cut > 0 else pos


def trim_plan(
    text: str, spans: Sequence[tuple[int, int]], limit: int = ABSTRACT_CHARS
) -> tuple[list[tuple[int, int]], bool]:
    """Ranges of ``text`` to show and whether anything was left out.

    Cuts at the last sentence end before ``limit`` (or a little after it), else at a
    word boundary. When every highlight lies beyond the cut, a short window around the
    first one is added, so the reason an entry was chosen stays visible.
    """
    if len(text) <= limit + ABSTRACT_SLACK:
        return [(0, len(text))], False
    cut = abstract_cut(text, limit)
    ranges = [(0, cut)]
    merged = merge_spans(spans, len(text))
    if merged and all(s >= cut for s, _ in merged):
        s, e = merged[0]
        lo = _word_cut(text, max(cut, s - 90), forward=False) if s - 90 > cut else cut
        hi = _word_cut(text, min(len(text), e + 120), forward=True)
        if lo < cut:
            lo = cut
        ranges.append((lo, hi))
    return ranges, True


@lru_cache(maxsize=4096)
def abstract_cut(text: str, limit: int) -> int:
    """Where ``text`` is cut without highlights; cached, as every subscriber's copy of an
    entry cuts at the same place."""
    ends = [m.end() for m in _SENTENCE_END.finditer(text, 0, limit + ABSTRACT_SLACK)]
    good = [e for e in ends if limit * 0.4 <= e <= limit + ABSTRACT_SLACK]
    before = [e for e in good if e <= limit]
    return (before or good or [0])[-1] or _word_cut(text, limit, forward=False)


@lru_cache(maxsize=4096)
def wrap_text(text: str) -> str:
    """``text`` wrapped for the plain-text part; cached, since highlights differ between
    subscribers but the plain abstract an entry shows rarely does. Each line of a text
    with several (a summary's headings, paragraphs, list items) is wrapped on its own,
    a list item's continuation indented under its text."""
    if "\n" not in text:
        return textwrap.fill(text, TEXT_WIDTH, break_long_words=False, break_on_hyphens=False)
    return "\n".join(
        textwrap.fill(
            line,
            TEXT_WIDTH,
            subsequent_indent="  " if line.startswith("- ") else "",
            break_long_words=False,
            break_on_hyphens=False,
        )
        for line in text.split("\n")
        if line.strip()
    )
