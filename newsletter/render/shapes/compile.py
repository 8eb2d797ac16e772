"""Run the CSS inliner once per template *shape*, not once per email.

premailer costs tens of milliseconds per document; a daily run makes one email per
subscriber. Most of an email is the same markup with different words in it, so the
template is rendered once with *probes* in place of the view objects: every truthy
scalar becomes a slot token, every list keeps one item per distinct variant (at least
two, to learn the separator). That probe document is inlined once and cut at the tokens
and at the ``|fragment`` markers into *parts*: literal (already inlined) markup, slots
and regions. An email is then assembled by filling slots with escaped values and
repeating region parts per item — no Jinja, no CSS work (:mod:`newsletter.render.shapes.fill`).

A shape is keyed by the object's *variant*: the truthiness of each of its fields, which
is what ``{% if %}`` in a template can see. Whatever a template does beyond that (a
filter on a per-subscriber value, ``loop.index`` in the output, a root value passed
into a macro) makes the compiled shape disagree with a real render; that is detected
here where possible (:class:`ShapeError`) and otherwise by the caller, which checks
every newly compiled shape against the reference render (see ``render.Renderer``).
"""

from __future__ import annotations

import dataclasses
import re
import secrets
from collections.abc import Callable, Iterable
from typing import Any

import lxml.html
from jinja2 import pass_eval_context
from jinja2.nodes import EvalContext
from markupsafe import Markup

from newsletter.render.shapes.fill import (
    Filler,
    LazyItem,
    MissingShape,
    Part,
    RegionRef,
    Rows,
    SlotRef,
    Variant,
    escape_html,
    field_names,
    variant_of,
)

__all__ = [
    "LazyItem",
    "MissingShape",
    "RegionRef",
    "Rows",
    "ShapeCompiler",
    "ShapeError",
    "SlotRef",
    "Variant",
    "escape_html",
    "fragment_filter",
    "same_html",
    "variant_of",
]


class ShapeError(Exception):
    """A template cannot be compiled into reusable parts (the caller falls back)."""


class _Slot(str):
    """A token standing for one value; a str so filters like ``join`` still work."""

    __slots__ = ()

    def __html__(self) -> str:
        return str(self)


class _ItemSlot(_Slot):
    """A list item that is itself a scalar (e.g. one keyword), with its region markers."""

    nl_begin: str
    nl_end: str


class _Probe:
    """Stands in for a view object while the shape is compiled."""

    __slots__ = ("_fields", "nl_begin", "nl_end")

    def __init__(self, fields: dict[str, Any], begin: str, end: str) -> None:
        self._fields = fields
        self.nl_begin = begin
        self.nl_end = end

    def __getattr__(self, name: str) -> Any:
        try:
            return self._fields[name]
        except KeyError:
            raise AttributeError(name) from None


@pass_eval_context
def fragment_filter(eval_ctx: EvalContext, value: Any, item: Any) -> Any:
    """``{{ macro(item)|fragment(item) }}``: marks one repeated unit for the fast path.

    A no-op on real data; around a probe it adds begin/end markers (HTML comments in
    HTML, bare tokens in text) so the compiled document can be cut into parts.
    """
    begin = getattr(item, "nl_begin", None)
    if begin is None:
        return value
    end = item.nl_end
    if eval_ctx.autoescape:
        return Markup(f"<!--{begin}-->") + value + Markup(f"<!--{end}-->")
    return f"{begin}{value}{end}"


class ShapeCompiler(Filler):
    """Compiled parts of one template, keyed by (region path, variant); fills emails.

    ``render`` renders the template with a root probe; ``postprocess`` is the CSS
    inliner (None for text); ``html`` escapes filled-in values. A list may be drawn
    with ``|fragment`` in more than one place only if every place draws its items
    alike; anything else is a :class:`ShapeError`, and the caller falls back.
    """

    def __init__(
        self,
        render: Callable[[Any], str],
        *,
        postprocess: Callable[[str], str] | None = None,
        html: bool = True,
    ) -> None:
        super().__init__(html=html)
        self._render = render
        self._post = postprocess or (lambda s: s)
        self._nonce = "nl" + secrets.token_hex(8)
        n = re.escape(self._nonce)
        wrap = (r"<!--", r"-->") if html else ("", "")
        self._token_re = re.compile(
            rf"{wrap[0]}{n}([be])(\w*)\.(\d+)\.(\d+){n}{wrap[1]}|{n}s(\d+)\.(\w*?){n}"
        )
        self._variants: list[tuple[tuple[str, ...], Variant]] = []
        self._variant_ids: dict[tuple[tuple[str, ...], Variant], int] = {}
        self._scope = 0
        self._scopes: dict[int, tuple[str, ...]] = {}
        self.compiles = 0

    # -- filling -----------------------------------------------------------------------

    def fill_parts(
        self, root: object, *, compile: bool = True, qp: bool = True
    ) -> tuple[bytes, list[bytes], bool]:
        """The document for ``root`` in UTF-8 (``surrogatepass``), with its quoted-printable
        lines (see :meth:`Filler.fill_document`) and whether a shape had to be compiled.

        With ``compile=False`` a missing shape raises :class:`MissingShape` instead (the
        caller builds the real views first: probes cannot be made of lazy items).
        ``qp=False``: no quoted-printable lines (an empty list), for 8bit bodies.
        """
        compiled = False
        while True:
            try:
                doc, lines = self.fill_document(root, variant_of(root), qp=qp)
                return doc, lines, compiled
            except MissingShape:
                if not compile:
                    raise
                if compiled:
                    raise ShapeError("the compiled shape does not cover this email") from None
                self.compile(root)
                compiled = True

    # -- compiling ---------------------------------------------------------------------

    def compile(self, root: object) -> None:
        """Render, inline and cut the probe of ``root``; store every shape it shows."""
        self._scopes = {}
        probe = self._probe(root, (), begin="", end="")
        doc = self._post(self._render(probe))
        tree = self._parse(doc)
        self._store((), variant_of(root), tree, scope=0)
        self.compiles += 1

    def _vid(self, path: tuple[str, ...], variant: Variant) -> int:
        key = (path, variant)
        vid = self._variant_ids.get(key)
        if vid is None:
            vid = self._variant_ids[key] = len(self._variants)
            self._variants.append(key)
        return vid

    def _new_scope(self, path: tuple[str, ...]) -> int:
        self._scope += 1
        self._scopes[self._scope] = path
        return self._scope

    def _slot(self, scope: int, field: str) -> str:
        return f"{self._nonce}s{scope}.{field}{self._nonce}"

    def _markers(self, field: str, vid: int, scope: int) -> tuple[str, str]:
        return (
            f"{self._nonce}b{field}.{vid}.{scope}{self._nonce}",
            f"{self._nonce}e{field}.{vid}.{scope}{self._nonce}",
        )

    def _probe_value(self, value: object, scope: int, field: str, path: tuple[str, ...]) -> Any:
        if isinstance(value, list | tuple):
            return self._probe_list(value, (*path, field))
        if not value or isinstance(value, bool):
            return value  # falsy values and flags are part of the variant, not slots
        return _Slot(self._slot(scope, field))

    def _probe_list(self, items: Iterable[object], path: tuple[str, ...]) -> list[Any]:
        reps: dict[Variant, object] = {}
        for item in items:
            reps.setdefault(variant_of(item), item)
        chosen = list(reps.values())
        if len(chosen) == 1:
            chosen.append(chosen[0])  # two items show what separates them
        out: list[Any] = []
        for item in chosen:
            vid = self._vid(path, variant_of(item))
            scope = self._new_scope(path)
            begin, end = self._markers(path[-1], vid, scope)
            out.append(self._probe(item, path, begin=begin, end=end, scope=scope))
        return out

    def _probe(
        self, obj: object, path: tuple[str, ...], *, begin: str, end: str, scope: int = 0
    ) -> Any:
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            fields = {
                n: self._probe_value(getattr(obj, n), scope, n, path)
                for n in field_names(type(obj))
            }
            return _Probe(fields, begin, end)
        if isinstance(obj, str) and obj:
            s = _ItemSlot(self._slot(scope, ""))
            s.nl_begin, s.nl_end = begin, end
            return s
        raise ShapeError(f"cannot probe a list item of type {type(obj).__name__}")

    def _parse(self, doc: str) -> list[Any]:
        """The document as a tree: str, ("slot", scope, field), ("item", vid, scope, children)."""
        stack: list[list[Any]] = [[]]
        open_items: list[tuple[int, int]] = []
        pos = 0
        for m in self._token_re.finditer(doc):
            if m.start() > pos:
                stack[-1].append(doc[pos : m.start()])
            pos = m.end()
            kind = m.group(1)
            if kind == "b":
                node: list[Any] = []
                stack[-1].append(("item", m.group(2), int(m.group(3)), int(m.group(4)), node))
                stack.append(node)
                open_items.append((int(m.group(3)), int(m.group(4))))
            elif kind == "e":
                if not open_items or open_items.pop() != (int(m.group(3)), int(m.group(4))):
                    raise ShapeError("fragment markers are not nested")
                stack.pop()
            else:
                stack[-1].append(("slot", int(m.group(5)), m.group(6)))
        if open_items:
            raise ShapeError("a fragment marker was lost by the inliner")
        if pos < len(doc):
            stack[-1].append(doc[pos:])
        return stack[0]

    def _store(self, path: tuple[str, ...], variant: Variant, tree: list[Any], scope: int) -> None:
        parts: list[Part] = []
        i = 0
        while i < len(tree):
            node = tree[i]
            if isinstance(node, str):
                if parts and type(parts[-1]) is str:
                    parts[-1] = parts[-1] + node
                else:
                    parts.append(node)
                i += 1
            elif node[0] == "slot":
                if node[1] != scope:
                    raise ShapeError("a value is used outside the fragment it belongs to")
                parts.append(SlotRef(node[2]))
                i += 1
            else:
                field = node[1]
                run, seps, i = self._run(tree, i, field)
                if len(set(seps)) > 1:
                    raise ShapeError(f"items of {field!r} are not separated uniformly")
                parts.append(RegionRef(field, seps[0] if seps else ""))
                for _, _, vid, item_scope, children in run:
                    item_path, item_variant = self._variants[vid]
                    if item_path != (*path, field) or self._scopes.get(item_scope) != item_path:
                        raise ShapeError(f"fragment {field!r} is not where it was expected")
                    self._store(item_path, item_variant, children, item_scope)
        key = (path, variant)
        if key in self.shapes and self.shapes[key] != parts:
            raise ShapeError(f"two items of the same variant render differently in {path!r}")
        self.shapes[key] = parts

    @staticmethod
    def _run(tree: list[Any], i: int, field: str) -> tuple[list[Any], list[str], int]:
        """Consecutive items of one field starting at ``i`` and the text between them."""
        run = [tree[i]]
        seps: list[str] = []
        i += 1
        while i < len(tree):
            node = tree[i]
            if isinstance(node, tuple) and node[0] == "item" and node[1] == field:
                seps.append("")
                run.append(node)
                i += 1
            elif (
                isinstance(node, str)
                and i + 1 < len(tree)
                and isinstance(tree[i + 1], tuple)
                and tree[i + 1][0] == "item"
                and tree[i + 1][1] == field
            ):
                seps.append(node)
                run.append(tree[i + 1])
                i += 2
            else:
                break
        return run, seps, i


def _squash(text: str | None) -> str:
    return " ".join((text or "").split())


def _canonical(html: str) -> list[tuple[str, ...]]:
    """Elements in document order with sorted attributes, declarations and squashed text."""
    tree = lxml.html.document_fromstring(html)
    out: list[tuple[str, ...]] = [("#doctype", tree.getroottree().docinfo.doctype)]
    for el in tree.iter():
        if not isinstance(el.tag, str):  # comments and processing instructions
            out.append(("#comment", _squash(el.text)))
        else:
            attrs = []
            for k, v in sorted(el.attrib.items()):
                if k == "style":
                    v = ";".join(sorted(_squash(d) for d in v.split(";") if d.strip()))
                attrs.append(f"{k}={_squash(v)}")
            out.append((el.tag, *attrs, _squash(el.text)))
        out.append(("#tail", _squash(el.tail)))
    return out


def same_html(a: str, b: str) -> bool:
    """Equal after parsing: elements, attributes, inlined styles, text (whitespace-squashed)."""
    return _canonical(a) == _canonical(b)
