"""A peer on the same entries: rss2email turning the benchmark's 1,000 entries into mail.

rss2email (``pip install '.[bench]'``) is the classic feed-to-email tool: it sends each
entry as its own, unpersonalised message. Here it reads the workload's entries from an
Atom file, as it would from a feed, and builds each entry's message (its HTML to text
conversion, headers, MIME, flattening to bytes); its sending step is replaced by
keeping the bytes, so no mail leaves and the figure is CPU per email, on one core.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from email.message import Message
from importlib import metadata
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from newsletter.domain import Article


def atom_feed(articles: Sequence[Article]) -> str:
    """The entries as an Atom document, their abstracts as HTML paragraphs."""
    out = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<feed xmlns="http://www.w3.org/2005/Atom">',
        "<title>bench</title><id>https://bench.example/feed</id>",
        "<updated>2026-11-23T06:00:00Z</updated>",
    ]
    for a in articles:
        authors = "".join(f"<author><name>{escape(n)}</name></author>" for n in a.authors)
        out.append(
            f"<entry><title>{escape(a.title)}</title><id>{escape(a.link)}</id>"
            f'<link href="{escape(a.link)}"/>'
            f"<updated>{a.published.strftime('%Y-%m-%dT%H:%M:%SZ')}</updated>{authors}"
            f'<summary type="html">{escape("<p>" + escape(a.summary) + "</p>")}</summary>'
            "</entry>"
        )
    out.append("</feed>")
    return "\n".join(out)


def measure_rss2email(articles: Sequence[Article]) -> dict[str, Any]:
    """rss2email's CPU per email for ``articles``, or ``{}`` when it is not installed."""
    try:
        from rss2email import config as r2e_config
        from rss2email import feed as r2e_feed
    except ImportError:
        return {}
    kept: list[bytes] = []
    with tempfile.TemporaryDirectory(prefix="newsletter-peer-") as tmp:
        path = Path(tmp) / "bench.atom"
        path.write_text(atom_feed(articles), encoding="utf-8")
        cfg = r2e_config.Config()
        cfg.read_dict(r2e_config.CONFIG)
        feed = r2e_feed.Feed(name="bench", url=str(path), to="reader@bench.example", config=cfg)

        def keep(sender: str, message: Message) -> None:
            kept.append(message.as_bytes())

        feed._send = keep
        started = time.process_time()
        parsed = feed._fetch()
        parse = time.process_time() - started
        feed._fetch = lambda: parsed  # measured apart: parsing the feed
        started = time.process_time()
        feed.run(send=True)
        build = time.process_time() - started
    n = len(kept)
    return {
        "peer": "rss2email " + metadata.version("rss2email"),
        "peer_emails": n,
        "peer_bytes_per_email": round(sum(map(len, kept)) / max(1, n)),
        "peer_cpu_us_parse": round(parse / max(1, n) * 1e6, 1),
        "peer_cpu_us_build": round(build / max(1, n) * 1e6, 1),
        "peer_cpu_us_per_email": round((parse + build) / max(1, n) * 1e6, 1),
    }
