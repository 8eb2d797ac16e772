"""The compiled-shape fast path on its own: compile a small template, fill it, compare.

The renderer's tests cover the real templates; these pin the contract of
:mod:`newsletter.render.shapes` itself with a template small enough to read: a filled
document is exactly what Jinja renders for the same values, a shape is compiled once
per variant, and the quoted-printable lines made on the way are the document's encoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from jinja2 import DictLoader, Environment, StrictUndefined

from newsletter.render import qp
from newsletter.render.shapes.compile import (
    MissingShape,
    ShapeCompiler,
    ShapeError,
    fragment_filter,
    variant_of,
)


@dataclass(frozen=True, slots=True)
class Item:
    title: str
    link: str  # "" draws the title without a link


@dataclass(frozen=True, slots=True)
class Page:
    name: str
    tags: tuple[str, ...]
    items: tuple[Item, ...]
    note: str


HTML = """<html><body><h1>Hi {{ name }}</h1>
<p>{% for t in tags %}{{ m.tag(t)|fragment(t) }} {% endfor %}</p>
{% for it in items %}{{ m.item(it)|fragment(it) }}{% endfor %}
{% if note %}<p class="note">{{ note }}</p>{% endif %}
</body></html>
"""
MACROS = """{% macro tag(t) %}<b>{{ t }}</b>{% endmacro %}
{% macro item(it) %}<div>{% if it.link %}<a href="{{ it.link }}">{{ it.title }}</a>\
{% else %}{{ it.title }}{% endif %}</div>
{% endmacro %}"""
TEXT = """Hi {{ name }}
{% for it in items %}{{ ('- ' ~ it.title ~ '\n')|fragment(it) }}{% endfor %}
{% if note %}{{ note }}
{% endif %}"""
TWICE = """{% for it in items %}{{ m.item(it)|fragment(it) }}{% endfor %}
{% for it in items %}<i>{{ it.title|fragment(it) }}</i>{% endfor %}"""


def _env(autoescape: bool) -> Environment:
    env = Environment(
        loader=DictLoader({"macros": MACROS}),
        autoescape=autoescape,
        undefined=StrictUndefined,
        trim_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["fragment"] = fragment_filter
    return env


def _renderer(source: str, *, html: bool) -> Any:
    env = _env(html)
    tpl = env.from_string(
        ('{% import "macros" as m %}' if html else "") + source,
    )

    def render(root: Any) -> str:
        return str(tpl.render(name=root.name, tags=root.tags, items=root.items, note=root.note))

    return render


PAGES = [
    Page("Ada", ("rlhf", "agents"), (Item("A <b>bold</b> claim", "https://x.example/1"),), ""),
    Page(
        "Grace & co",
        ("diffusion",),
        (Item("One", "https://x.example/1"), Item('Two & "three"', ""), Item("Four", "")),
        "see you <tomorrow>",
    ),
    Page("Alan", (), (), "nothing new"),
    Page("Émile ✓", ("x" * 200,), (Item("é" * 120, "https://x.example/é"),), "ünïcode"),
]


@pytest.mark.parametrize("html", [True, False], ids=["html", "text"])
def test_a_filled_document_is_what_jinja_renders(html: bool) -> None:
    render = _renderer(HTML if html else TEXT, html=html)
    shapes = ShapeCompiler(render, html=html)
    for page in PAGES * 2:  # the second round fills shapes compiled in the first
        doc, _, _ = shapes.fill_parts(page)
        assert doc.decode("utf-8") == render(page)


def test_a_shape_is_compiled_once_per_variant_and_missing_ones_raise() -> None:
    render = _renderer(HTML, html=True)
    shapes = ShapeCompiler(render, html=True)
    with pytest.raises(MissingShape):
        shapes.fill_parts(PAGES[0], compile=False)
    _, _, compiled = shapes.fill_parts(PAGES[0])
    assert compiled and shapes.compiles == 1
    # Other values of the same variant: no new shape.
    same = Page("Bob", ("a", "b", "c"), (Item("Other", "https://y.example"),), "")
    assert variant_of(same) == variant_of(PAGES[0])
    doc, _, compiled = shapes.fill_parts(same, compile=False)
    assert not compiled and shapes.compiles == 1
    assert doc.decode() == render(same)
    # A note and a link-less item are new variants: compiled on first sight only.
    _, _, compiled = shapes.fill_parts(PAGES[1])
    assert compiled and shapes.compiles == 2
    _, _, compiled = shapes.fill_parts(PAGES[1])
    assert not compiled and shapes.compiles == 2


@pytest.mark.parametrize("html", [True, False], ids=["html", "text"])
def test_the_lines_made_on_the_way_are_the_documents_quoted_printable(html: bool) -> None:
    render = _renderer(HTML if html else TEXT, html=html)
    shapes = ShapeCompiler(render, html=html)
    for page in PAGES * 2:
        doc, lines, _ = shapes.fill_parts(page)
        raw = doc if doc.endswith(b"\n") else doc + b"\n"
        assert qp.BAD_LINE not in lines
        assert b"".join(lines) == qp.quoted_printable(raw)


def test_values_are_escaped_in_html_and_left_alone_in_text() -> None:
    hostile = Page("<script>alert(1)</script>", ("a&b",), (Item('"><img src=x>', ""),), "")
    html = ShapeCompiler(_renderer(HTML, html=True), html=True)
    html.fill_parts(PAGES[0])  # compile with other values
    doc = html.fill_parts(hostile)[0].decode()
    assert "<script>" not in doc and "&lt;script&gt;" in doc
    assert "<img" not in doc and "&#34;&gt;&lt;img src=x&gt;" in doc
    text = ShapeCompiler(_renderer(TEXT, html=False), html=False)
    assert text.fill_parts(hostile)[0].decode() == _renderer(TEXT, html=False)(hostile)


def test_a_list_drawn_two_ways_cannot_be_compiled() -> None:
    shapes = ShapeCompiler(_renderer(TWICE, html=True), html=True)
    with pytest.raises(ShapeError):
        shapes.fill_parts(PAGES[1])
