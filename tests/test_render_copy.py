"""The words of a digest: the noun the copy uses for entries (per feed or configured)
and the plain-text part's layout (72 columns, block structure kept)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from newsletter.config import settings_from_mapping
from newsletter.errors import ConfigError
from newsletter.render import Renderer
from tests.support.digests import profile, request, sample_matches, settings


def test_the_noun_follows_the_feeds_or_the_config() -> None:
    posts = [replace(m, article=replace(m.article, feed_name="blog")) for m in sample_matches(2)]
    papers = [replace(m, article=replace(m.article, feed_name="arxiv")) for m in sample_matches(1)]
    nouns = {"blog": "post", "arxiv": "paper"}
    for fast in (True, False):
        r = Renderer(settings(), nouns=nouns, fast=fast)
        email = r.render(request(profile(), posts))
        assert email is not None
        assert email.subject.startswith("Your posts for Sun 22 Nov: 2 new")
        assert "2 new posts matched your keywords" in email.text
        assert "2 new posts matched" in email.html and " papers" not in email.html
        one = r.render(request(profile(), papers))
        assert one is not None and "1 new paper matched" in one.text
        # Feeds that disagree: the configured default.
        mixed = Renderer(settings(noun="story"), nouns=nouns, fast=fast)
        email = mixed.render(request(profile(), posts + papers))
        assert email is not None and email.subject.startswith("Your stories for")
        assert "3 new stories matched" in email.text


def test_feed_nouns_are_read_from_the_config(tmp_path: Path) -> None:
    s = settings_from_mapping(
        {
            "newsletter": {"noun": "item"},
            "feeds": [{"name": "b", "url": "https://example.org/b", "noun": "post"}],
        },
        base_dir=tmp_path,
    )
    assert s.newsletter.noun == "item" and s.feeds[0].noun == "post"
    with pytest.raises(ConfigError, match=r"feeds\[1\]\.noun"):
        settings_from_mapping({"feeds": [{"name": "b", "url": "/x", "noun": 3}]})
