"""The plain-text part at 72 columns: every rendered line that is longer is wrapped. Pure.

Applied to the whole text part after rendering, on both paths (the Jinja reference and
the filled shapes), so they stay byte-identical whatever the templates hold: titles,
"Matched:" lines, bylines and the footer are wrapped as well as abstracts. A line keeps
its indentation and list marker (``- ``, ``3. ``) as a hanging indent. URLs are never
broken, and a short label stays beside its URL ("Paper page: https://..."), so only a
line holding a URL may stay longer; any other word longer than a line is cut.
"""

from __future__ import annotations

import re
from functools import lru_cache

from newsletter.render.qp import BAD_LINE, encoded_line

WIDTH = 72
LABEL_MAX = 24  # a label this short ending in ":" keeps its URL on its line
_PREFIX = re.compile(r"[ \t]*(?:(?:\d{1,4}\.|[-*•])[ \t]+)?")
_URL = re.compile(r"[<(\"']?(?:[A-Za-z][A-Za-z0-9+.-]*://|mailto:)\S")


def is_url(word: str) -> bool:
    return _URL.match(word) is not None


def reflow(text: str) -> str:
    """``text`` with each line longer than :data:`WIDTH` characters wrapped."""
    lines = text.split("\n")
    if all(len(line) <= WIDTH for line in lines):
        return text
    out: list[str] = []
    for line in lines:
        if len(line) <= WIDTH or labelled_url(line):
            out.append(line)
        else:
            out.extend(wrap_line(line))
    return "\n".join(out)


def labelled_url(line: str) -> bool:
    """Whether ``line`` is a short label and one URL ("More like this: https://..."),
    which :func:`wrap_line` gives back as it is. Checked first because such links are
    signed per reader: they never recur, so caching them would only evict the lines
    that do."""
    label, space, url = line.rpartition(" ")
    return (
        bool(space)
        and len(label) <= LABEL_MAX
        and label.endswith(":")
        and "  " not in label
        and " · " not in line
        and _PREFIX.match(label).end() == 0  # type: ignore[union-attr]
        and is_url(url)
    )


@lru_cache(maxsize=8192)
def wrap_line(line: str) -> tuple[str, ...]:
    """One long line as lines of at most :data:`WIDTH` characters (URLs excepted);
    cached, as "Matched:" lines and titles recur from one subscriber to the next."""
    m = _PREFIX.match(line)
    prefix = m.group(0) if m else ""
    hang = " " * len(prefix.expandtabs())
    words = _units(line[len(prefix) :], WIDTH - len(hang))
    if not words:
        return (line.rstrip(),)
    out: list[str] = []
    cur = prefix
    empty = True  # nothing after the prefix on the current line yet
    for word in words:
        if not empty and len(cur) + 1 + len(word) <= WIDTH:
            cur += " " + word
            continue
        if not empty and is_url(word) and _label(cur, len(out) == 0, prefix):
            cur += " " + word  # "arXiv: https://..." stays one line
            continue
        too_long = not is_url(word) and len(hang) + len(word) > WIDTH
        if not empty and too_long and len(cur) + 1 < WIDTH:
            cur += " "  # a word longer than any line starts where this one ends
        elif not empty:
            out.append(cur)
            cur, empty = hang, True
        if is_url(word) or len(cur) + len(word) <= WIDTH:
            cur += word
            empty = False
            continue
        # A word longer than a line (no URL): cut it at the width.
        while len(cur) + len(word) > WIDTH:
            take = WIDTH - len(cur)
            out.append(cur + word[:take])
            cur, word = hang, word[take:]
        cur += word
        empty = not word
    if not empty:
        out.append(cur)
    return tuple(out)


def _units(text: str, room: int) -> list[str]:
    """What a line is wrapped by: its words, or the parts of a line joined by " · "
    (a card's byline, date, votes and comments) kept whole where they fit a line, so
    "3 comments" does not break after the 3."""
    if " · " not in text:
        return [w for w in text.split(" ") if w]
    parts = text.split(" · ")
    units: list[str] = []
    for i, part in enumerate(parts):
        unit = part if i == len(parts) - 1 else part + " ·"
        if len(unit) <= room and unit.strip():
            units.append(unit)
        else:
            units.extend(w for w in unit.split(" ") if w)
    return units


def _label(cur: str, first: bool, prefix: str) -> bool:
    text = cur[len(prefix) :] if first else cur.lstrip()
    return first and len(text) <= LABEL_MAX and text.endswith(":")


def reflow_body(
    raw: bytes, encoded: list[bytes], *, qp: bool = True
) -> tuple[bytes, list[bytes]] | None:
    """The fast path's text body and its quoted-printable pieces, reflowed: the same
    (``raw``, ``encoded``) when no line is too long, None when a line cannot be
    encoded (the MIME builder then does the body). The lines are encoded again one by
    one (``encoded_line`` remembers them: most recur from one email to the next).

    ``qp=False`` (an 8bit body, which needs no pieces): the reflowed bytes and no
    pieces; a lone surrogate is then left for the caller's byte scan to find."""
    if all(len(line) <= WIDTH for line in raw.split(b"\n")):
        return raw, encoded  # (bytes overcount non-ASCII characters: no false "no")
    text = raw.decode("utf-8", "surrogatepass")
    wrapped = reflow(text)
    if wrapped == text:
        return raw, encoded
    if not qp:
        return wrapped.encode("utf-8", "surrogatepass"), []
    body = wrapped if wrapped.endswith("\n") else wrapped + "\n"
    pieces = [encoded_line(line) for line in body.split("\n")[:-1]]
    if BAD_LINE in pieces:
        return None
    return wrapped.encode("utf-8", "surrogatepass"), pieces
