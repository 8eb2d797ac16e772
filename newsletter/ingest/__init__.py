"""Ingest: fetch a source, parse it and normalise its entries into ``ParsedEntry`` values.

``http`` downloads (conditional GET, one deadline, a size limit), ``parse`` reads RSS and
Atom, ``hf`` the Hugging Face Daily Papers JSON API, ``text`` makes markup plain,
``keys`` gives every entry its dedupe key. May import ``config``, ``domain`` and
``errors``; never ``db`` (the pipeline stores what this returns).
"""

from __future__ import annotations

from newsletter.ingest.hf import DailyPapersFetch, DayFetch, fetch_daily_papers, parse_daily_papers
from newsletter.ingest.http import Download, download
from newsletter.ingest.keys import arxiv_id, canonical_link, dedupe_key, normalise_title
from newsletter.ingest.parse import FeedFetch, ParsedFeed, fetch_feed, normalise_entry, parse_feed
from newsletter.ingest.text import clean_text, html_to_text, split_author_list

__all__ = [
    "DailyPapersFetch",
    "DayFetch",
    "Download",
    "FeedFetch",
    "ParsedFeed",
    "arxiv_id",
    "canonical_link",
    "clean_text",
    "dedupe_key",
    "download",
    "fetch_daily_papers",
    "fetch_feed",
    "html_to_text",
    "normalise_entry",
    "normalise_title",
    "parse_daily_papers",
    "parse_feed",
    "split_author_list",
]
