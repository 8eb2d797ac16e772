"""The Jinja environment of the emails, the CSS inliner, and the subject line. Pure.

Shared by both rendering paths (see :mod:`newsletter.render.renderer`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import premailer
from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    PrefixLoader,
    StrictUndefined,
    TemplateError,
    meta,
    nodes,
    select_autoescape,
)

from newsletter.config import bundled_dir
from newsletter.render.shapes.compile import fragment_filter
from newsletter.render.views import clean

_SUBJECTS_MAX = 20_000


def make_environment(templates_dir: Path | None = None) -> Environment:
    """Jinja for emails: a user's ``templates_dir`` first, then the bundled templates.

    A user file with the same name replaces the bundled one; ``bundled/NAME`` always
    means the bundled file, so a user template can ``{% extends "bundled/digest.html" %}``
    and override only a block.
    """
    bundled = bundled_dir("templates")
    loaders: list[BaseLoader] = [PrefixLoader({"bundled": FileSystemLoader(bundled)})]
    if templates_dir is not None:
        loaders.append(FileSystemLoader(templates_dir))
    loaders.append(FileSystemLoader(bundled))
    env = Environment(
        loader=ChoiceLoader(loaders),
        autoescape=select_autoescape(("html", "htm", "xml"), default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,
    )
    env.filters["fragment"] = fragment_filter
    return env


def inline_css(html: str) -> str:
    """premailer with the options every path shares (media queries stay in <head>)."""
    return str(
        premailer.Premailer(
            html,
            keep_style_tags=False,
            strip_important=False,
            remove_classes=False,
            disable_validation=True,
            allow_network=False,
            allow_loading_external_files=False,
            cssutils_logging_level=logging.CRITICAL,
        ).transform()
    )


def _read_names(env: Environment, name: str) -> frozenset[str] | None:
    """The variables template ``name`` reads; None when it pulls in other templates."""
    try:
        source = env.loader.get_source(env, name)[0] if env.loader else None
    except TemplateError:
        return None
    if source is None:
        return None
    ast = env.parse(source)
    if any(ast.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport))):
        return None
    return frozenset(meta.find_undeclared_variables(ast))


class SubjectLine:
    """``subject.txt``, one clean line; memoised when the template reads only plain values.

    The bundled template reads the day, the count and the top keywords, so subscribers
    with the same top keywords share a subject; a template that reads anything else
    (or pulls in other templates) is rendered every time.
    """

    def __init__(self, env: Environment, *, plain: set[str]) -> None:
        self.env = env
        names = _read_names(env, "subject.txt")
        self._key: tuple[str, ...] | None = None
        if names is not None and names <= plain | {"top_keywords", "n_total"}:
            self._key = tuple(sorted(names))
        self.reads_cards = names is None or "cards" in names
        self._lines: dict[tuple[Any, ...], str] = {}

    def render(self, ctx: dict[str, Any], top: Sequence[str], n_total: int) -> str:
        """The line for the view's values in ``ctx`` (TemplateError as Jinja raises it)."""
        key = None
        if self._key is not None:
            key = tuple(
                tuple(top) if n == "top_keywords" else n_total if n == "n_total" else ctx[n]
                for n in self._key
            )
            got = self._lines.get(key)
            if got is not None:
                return got
        ctx["top_keywords"] = list(top)
        ctx["n_total"] = n_total
        line = clean(self.env.get_template("subject.txt").render(ctx))
        if key is not None:
            if len(self._lines) >= _SUBJECTS_MAX:
                self._lines.clear()
            self._lines[key] = line
        return line
