"""Filling compiled template shapes with one email's values: no Jinja, no CSS work. Pure.

A compiled shape (see :mod:`newsletter.render.shapes.compile`) is a list of *parts*: literal,
already inlined markup, slots for scalar values and regions that repeat a list's items.
Filling one is a walk over the parts; everything here keeps that walk short, because a
send fills two documents per subscriber:

* a region's string items (keyword chips) are filled once per distinct value;
* a :class:`LazyItem` (the fast path's card) hands its highlight lists over as runs of
  text, filled as one piece, and names the fields it shares with other items (an
  entry's link, byline, …): the shape is specialised once per such group, with those
  values merged into the literal markup;
* the walk also yields the document's quoted-printable encoding (:mod:`newsletter.render.qp`):
  a literal's inner lines are encoded when its shape is first used, so per email only
  the lines that hold values are, and of those only the values need escaping.

A worked example (``tests/test_shapes.py`` runs it). The text template::

    Hi {{ name }}
    {% for it in items %}{{ ('- ' ~ it.title ~ '\n')|fragment(it) }}{% endfor %}

compiled for ``Page(name="Ada", items=(Item("One", link="l"), Item("Two", link="")))``
stores one shape per (region path, variant), a variant being each field's truth (2 for
a non-empty value, 1 for an empty one, 0 for None; see :func:`variant_of`)::

    ((), (2, 1, 2, 1))         ['Hi ', SlotRef('name'), '\n', RegionRef('items', sep='')]
    (('items',), (2, 2))       ['- ', SlotRef('title'), '\n']    # an item with a link
    (('items',), (2, 1))       ['- ', SlotRef('title'), '\n']    # ... and one without

Filling ``Page("Bob", items=(Item("Three", "x"),))`` then walks the root shape: the
literal ``'Hi '``, ``'Bob'`` escaped for the document (HTML-escaped in an HTML
template), ``'\n'``; at the region, each item's own shape by its variant. The result
is ``b"Hi Bob\n- Three\n"`` and its quoted-printable lines ``[b"Hi Bob\r\n",
b"- Three\r\n"]``, without Jinja. An object whose variant has no shape yet raises
:class:`MissingShape`; the compiler then renders a probe of it and stores its shapes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from functools import partial
from itertools import chain, cycle, islice
from typing import Any

from markupsafe import escape

from newsletter.render.qp import BAD_LINE, encoded_line, escaped

Variant = tuple[int, ...]
ShapeKey = tuple[tuple[str, ...], Variant]  # (region path, variant)
# A list field handed over as runs instead of items: the items' ``text`` values, the two
# variants the items alternate between (the first item's first), and whether the texts
# may need HTML escaping (they hold no NUL).
Rows = tuple[list[str], tuple[Variant, Variant], bool]

_MEMO_MAX = 20_000  # distinct chips kept
_PROGRAMS_MAX = 4_096  # specialised shapes kept (about one per entry and variant)
_ESCAPED_MAX = 20_000
_ESCAPED_LEN = 200


class MissingShape(Exception):
    """No compiled shape yet for some object of this email (the caller compiles one)."""


@dataclass(frozen=True, slots=True)
class SlotRef:
    field: str  # "" for the item itself (a list of strings)


@dataclass(frozen=True, slots=True)
class RegionRef:
    field: str
    sep: str  # what the template emits between two items


Part = str | SlotRef | RegionRef


def _truth(value: object) -> int:
    if value is None:
        return 0
    return 2 if value else 1


_FIELD_NAMES: dict[type[Any], tuple[str, ...]] = {}


def field_names(cls: type[Any]) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = tuple(f.name for f in dataclasses.fields(cls))
        _FIELD_NAMES[cls] = names
    return names


def variant_of(obj: object) -> Variant:
    """What a template's conditionals can tell apart: each field's truthiness."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return tuple(_truth(getattr(obj, n)) for n in field_names(type(obj)))
    return (_truth(obj),)


class LazyItem:
    """A list item the fast fill reads without building the view object it stands for.

    A subclass exposes each scalar field of that view as an attribute, ``fill_variant``
    (what :func:`variant_of` would say of the view), for a list field whose items have
    one slot, ``text`` (highlight runs), :meth:`fill_rows`, and in ``fill_static``
    (a hashable token, field names) the fields whose values every item with that token
    shares. Anything else is read through the attribute of the same name, which may
    build the view.
    """

    __slots__ = ()
    fill_variant: Variant
    fill_static: tuple[Hashable, frozenset[str]] | None

    def fill_rows(self, field: str) -> Rows | None:
        return None


_ESCAPED: dict[str, str] = {}


def _escape_str(text: str) -> str:
    return (
        text.replace("&", "&amp;")
        .replace(">", "&gt;")
        .replace("<", "&lt;")
        .replace("'", "&#39;")
        .replace('"', "&#34;")
    )


def escape_html(value: object) -> str:
    """``str(markupsafe.escape(value))``; memoised for short strings, which mostly repeat."""
    if type(value) is str:
        out = _ESCAPED.get(value)
        if out is None:
            out = _escape_str(value)
            if len(value) <= _ESCAPED_LEN:
                if len(_ESCAPED) >= _ESCAPED_MAX:
                    _ESCAPED.clear()
                _ESCAPED[value] = out
        return out
    if type(value) is int:
        return str(value)
    return str(escape(value))


def _as_text(value: object) -> str:
    return value if type(value) is str else str(value)


class _Lit:
    """A literal part, and what a fill needs of its lines: the text before its first LF,
    from there to its last LF (and those lines encoded), the text after."""

    __slots__ = (
        "between",
        "between_b",
        "head",
        "head_e",
        "head_n",
        "mid",
        "nl",
        "tail",
        "tail_e",
        "tail_n",
        "text",
    )

    def __init__(self, text: str) -> None:
        self.text = text
        head, sep, rest = text.partition("\n")
        self.nl = bool(sep)
        self.head = head
        inner, sep, self.tail = rest.rpartition("\n")
        self.between = text[len(head) : len(text) - len(self.tail)]
        self.between_b = self.between.encode("utf-8", "surrogatepass")
        encoded = [encoded_line(line) for line in inner.split("\n")] if sep else []
        self.mid = BAD_LINE if BAD_LINE in encoded else b"".join(encoded)
        # The start and end of the lines around values, escaped once (see qp.encoded_line).
        self.head_e, self.head_n = _escaped(head), len(head)
        self.tail_e, self.tail_n = _escaped(self.tail), len(self.tail)


def _escaped(text: str) -> bytes | None:
    try:
        return escaped(text.encode("utf-8", "surrogateescape"))
    except UnicodeEncodeError:
        return None


_NO_LITERAL = _Lit("")  # what a line starts with when no literal began it
Program = list[_Lit | SlotRef | RegionRef]


def _program_of(parts: list[Part]) -> Program:
    return [_Lit(p) if isinstance(p, str) else p for p in parts]


class Filler:
    """Fills the shapes in ``self.shapes`` (set by the compiler) for one template.

    A fill appends the document's UTF-8 (``surrogatepass``: it never fails) line by
    line to ``doc`` and the quoted-printable encoding of those lines to ``lines`` (see
    :mod:`newsletter.render.qp`): a literal part's inner lines are encoded once, when its shape
    is first used; only the lines around values are encoded per email, and only their
    values, the static markup around them having been escaped once. ``cur`` holds the
    pieces of the line being made. Bytes, because an email's HTML is mostly ASCII but
    for a few characters (an arrow, a triangle) that would make it a two-byte-per-
    character string, slow to join and to encode.
    """

    def __init__(self, *, html: bool) -> None:
        self._html = html
        self.shapes: dict[ShapeKey, list[Part]] = {}
        self._esc: Callable[[object], str] = escape_html if html else _as_text
        self._items: dict[tuple[tuple[str, ...], str], str] = {}
        self._pairs: dict[tuple[tuple[str, ...], tuple[Variant, Variant]], Any] = {}
        self._ready: dict[ShapeKey, Program] = {}
        self._programs: dict[tuple[ShapeKey, Hashable, frozenset[str]], Program] = {}
        self._start = _NO_LITERAL  # the literal whose end began the current line
        self._qp = True  # make the quoted-printable lines too (not for an 8bit body)

    def fill_document(
        self, root: object, variant: Variant, *, qp: bool = True
    ) -> tuple[bytes, list[bytes]]:
        """The document for ``root`` in UTF-8 (``surrogatepass``), and its quoted-printable
        lines (each with its CRLF; valid when the document holds no CR, and only without
        BAD_LINE among them).

        With ``qp=False`` the lines are not made (an empty list): an 8bit body needs none.
        Raises :class:`MissingShape` when a shape is missing.
        """
        doc: list[bytes] = []
        cur: list[str] = []
        lines: list[bytes] = []
        self._start = _NO_LITERAL
        self._qp = qp
        self._fill(((), variant), root, doc, cur, lines)
        last = "".join(cur)
        doc.append(last.encode("utf-8", "surrogatepass"))
        if qp and (last or not lines):
            lines.append(encoded_line(last, self._start.tail_e, self._start.tail_n))
        return b"".join(doc), lines

    def _aside(self, fill: Callable[[list[bytes], list[str], list[bytes]], None]) -> str:
        """The text of a fill apart from the document (whose line goes on after it)."""
        start = self._start
        doc: list[bytes] = []
        cur: list[str] = []
        self._start = _NO_LITERAL
        fill(doc, cur, [])
        self._start = start
        return b"".join(doc).decode("utf-8", "surrogatepass") + "".join(cur)

    def _prepared(self, key: ShapeKey) -> Program:
        parts = self.shapes.get(key)
        if parts is None:
            raise MissingShape
        program = _program_of(parts)
        self._ready[key] = program
        return program

    def _fill(
        self, key: ShapeKey, obj: object, doc: list[bytes], cur: list[str], lines: list[bytes]
    ) -> None:
        if isinstance(obj, LazyItem) and obj.fill_static is not None:
            program = self._program(key, obj, obj.fill_static)
        else:
            program = self._ready.get(key) or self._prepared(key)
        esc = self._esc
        qp = self._qp
        for p in program:
            if type(p) is _Lit:
                if p.nl:
                    cur.append(p.head)
                    line = "".join(cur)
                    doc.append(line.encode("utf-8", "surrogatepass"))
                    doc.append(p.between_b)
                    if qp:
                        start = self._start
                        lines.append(
                            encoded_line(line, start.tail_e, start.tail_n, p.head_e, p.head_n)
                        )
                        if p.mid:
                            lines.append(p.mid)
                    cur.clear()
                    cur.append(p.tail)
                    self._start = p
                else:
                    cur.append(p.text)
            elif type(p) is SlotRef:
                value = esc(getattr(obj, p.field) if p.field else obj)
                if "\n" in value:
                    self._split(value, doc, cur, lines)
                else:
                    cur.append(value)
            else:
                assert isinstance(p, RegionRef)
                self._fill_region((*key[0], p.field), p, obj, doc, cur, lines)

    def _split(self, piece: str, doc: list[bytes], cur: list[str], lines: list[bytes]) -> None:
        """Add a value that ends lines: the current one, and any inside it."""
        first, *inner, last = piece.split("\n")
        cur.append(first)
        line = "".join(cur)
        doc.append(line.encode("utf-8", "surrogatepass"))
        doc.append(piece[len(first) : len(piece) - len(last)].encode("utf-8", "surrogatepass"))
        if self._qp:
            start = self._start
            lines.append(encoded_line(line, start.tail_e, start.tail_n))
            lines.extend([encoded_line(line) for line in inner])
        cur.clear()
        cur.append(last)
        self._start = _NO_LITERAL

    def _program(
        self, key: ShapeKey, obj: LazyItem, static: tuple[Hashable, frozenset[str]]
    ) -> Program:
        """The shape with the values ``obj`` shares with its group filled in, once."""
        pkey = (key, static[0], static[1])
        program = self._programs.get(pkey)
        if program is None:
            parts = self.shapes.get(key)
            if parts is None:
                raise MissingShape
            merged: list[Part] = []
            for p in parts:
                if type(p) is SlotRef and p.field in static[1]:
                    p = self._esc(getattr(obj, p.field))
                elif type(p) is RegionRef and p.field in static[1]:
                    p = self._aside(partial(self._fill_region, (*key[0], p.field), p, obj))
                if type(p) is str and merged and type(merged[-1]) is str:
                    merged[-1] = str(merged[-1]) + p
                else:
                    merged.append(p)
            program = _program_of(merged)
            if len(self._programs) >= _PROGRAMS_MAX:
                self._programs.clear()
            self._programs[pkey] = program
        return program

    def _fill_region(
        self,
        sub: tuple[str, ...],
        ref: RegionRef,
        obj: object,
        doc: list[bytes],
        cur: list[str],
        lines: list[bytes],
    ) -> None:
        if isinstance(obj, LazyItem):
            rows = obj.fill_rows(ref.field)
            if rows is not None:
                piece = self._fill_rows(sub, ref.sep, rows)
                if piece is not None:
                    if "\n" in piece:
                        self._split(piece, doc, cur, lines)
                    else:
                        cur.append(piece)
                    return
        sep = ref.sep
        first = True
        for item in getattr(obj, ref.field):
            if first:
                first = False
            elif sep:
                if "\n" in sep:
                    self._split(sep, doc, cur, lines)
                else:
                    cur.append(sep)
            if type(item) is str:
                piece = self._fill_scalar(sub, item)
                if "\n" in piece:
                    self._split(piece, doc, cur, lines)
                else:
                    cur.append(piece)
            elif isinstance(item, LazyItem):
                self._fill((sub, item.fill_variant), item, doc, cur, lines)
            else:
                self._fill((sub, variant_of(item)), item, doc, cur, lines)

    def _fill_scalar(self, path: tuple[str, ...], item: str) -> str:
        """A string item (a keyword chip): its output depends on its value only."""
        key = (path, item)
        got = self._items.get(key)
        if got is None:
            got = self._aside(partial(self._fill, (path, variant_of(item)), item))
            if len(self._items) >= _MEMO_MAX:
                self._items.clear()
            self._items[key] = got
        return got

    def _fill_rows(self, path: tuple[str, ...], sep: str, rows: Rows) -> str | None:
        """A lazy item's runs as one piece; None when an item's shape is not flat.

        Runs alternate between two flat shapes, so the markup between two texts
        alternates too: the texts are escaped in one go and interleaved in C.
        """
        texts, variants, needs_escape = rows
        n = len(texts)
        if not n:
            return ""
        pair = self._pairs.get((path, variants))
        if pair is None:
            a, b = (self._flat_pattern((path, v)) for v in variants)
            if a is None or b is None:
                self._pairs[path, variants] = False
                return None
            pair = self._pairs[path, variants] = (
                a[0],
                a[1] + sep + b[0],
                b[1] + sep + a[0],
                a[1],
                b[1],
            )
        elif pair is False:
            return None
        pre, after_a, after_b, end_a, end_b = pair
        if needs_escape and self._html:
            joined = "\x00".join(texts)
            if joined.count("\x00") == n - 1:
                texts = _escape_str(joined).split("\x00")
            else:
                texts = [_escape_str(t) for t in texts]
        if n == 1:
            return pre + texts[0] + end_a
        between = islice(cycle((after_a, after_b)), n - 1)
        body = "".join(chain.from_iterable(zip(texts, between, strict=False)))
        return pre + body + texts[-1] + (end_a if n % 2 else end_b)

    def _flat_pattern(self, key: ShapeKey) -> tuple[str, str] | None:
        """(before, after) when the shape is literal text around one ``text`` slot."""
        parts = self.shapes.get(key)
        if parts is None:
            raise MissingShape
        slots = [i for i, p in enumerate(parts) if type(p) is not str]
        if len(slots) != 1 or parts[slots[0]] != SlotRef("text"):
            return None
        i = slots[0]
        return "".join(str(p) for p in parts[:i]), "".join(str(p) for p in parts[i + 1 :])
