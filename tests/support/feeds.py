"""Small feed documents built in tests, so each test shows the exact input it relies on."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from newsletter.config import Settings, settings_from_mapping

HF_NS = "https://huggingface.co/papers#"


@dataclass
class Item:
    title: str
    id: str | None = None
    link: str | None = None
    summary: str = ""
    published: str | None = "2024-01-15T08:00:00Z"
    authors: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    upvotes: int | None = None
    author_count: int | None = None


def atom(*items: Item, title: str = "Test feed", hf_prefix: str = "hf") -> bytes:
    """An Atom 1.0 document; ``hf:upvotes``/``hf:authors`` under any prefix."""
    parts = [
        '<?xml version="1.0" encoding="utf-8"?>',
        f'<feed xmlns="http://www.w3.org/2005/Atom" xmlns:{hf_prefix}="{HF_NS}">',
        f"<title>{escape(title)}</title>",
        "<id>urn:test:feed</id><updated>2024-01-15T08:00:00Z</updated>",
    ]
    for it in items:
        parts.append("<entry>")
        parts.append(f"<title>{escape(it.title)}</title>")
        if it.id:
            parts.append(f"<id>{escape(it.id)}</id>")
        if it.link:
            parts.append(f'<link rel="alternate" href="{escape(it.link, {chr(34): "&quot;"})}"/>')
        if it.published:
            parts.append(f"<published>{it.published}</published>")
        if it.summary:
            parts.append(f'<summary type="html">{escape(it.summary)}</summary>')
        for a in it.authors:
            parts.append(f"<author><name>{escape(a)}</name></author>")
        for c in it.categories:
            parts.append(f'<category term="{escape(c)}"/>')
        if it.upvotes is not None:
            parts.append(f"<{hf_prefix}:upvotes>{it.upvotes}</{hf_prefix}:upvotes>")
        if it.author_count is not None:
            parts.append(f"<{hf_prefix}:authors>{it.author_count}</{hf_prefix}:authors>")
        parts.append("</entry>")
    parts.append("</feed>")
    return "\n".join(parts).encode("utf-8")


def settings_for(feeds: dict[str, str], base_dir: Path, **sections: Any) -> Settings:
    """Settings with these feeds (name -> url or path) and any other sections."""
    data: dict[str, Any] = {
        "feeds": [{"name": n, "url": u} for n, u in feeds.items()],
        **sections,
    }
    return settings_from_mapping(data, base_dir=base_dir)
