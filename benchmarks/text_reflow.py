"""``python -m benchmarks.text_reflow``: what wrapping the text part at 72 columns costs.

Renders the golden feed's digest (``tests/fixtures/golden_feed.atom``, every entry a
card) for ``--n`` subscribers on the fast path, then times the reflow of one of those
text parts alone, and prints both per email. A benchmark, not a test: the figures
depend on the machine and its load (take the best of ``--repeat``).
"""

from __future__ import annotations

import argparse
import timeit
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from newsletter.config import NewsletterSettings
from newsletter.domain import Article, Keyword, Match, Profile
from newsletter.ingest import parse_feed
from newsletter.matching import Matcher
from newsletter.render import Renderer
from newsletter.render import renderer as renderer_module
from newsletter.render.email import DigestRequest
from newsletter.render.plain import reflow_body

FEED = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "golden_feed.atom"
NOW = datetime(2026, 11, 21, 5, tzinfo=UTC)


def _articles() -> list[Article]:
    parsed = parse_feed(FEED.read_bytes(), base_url="https://example.org/feed", now=NOW)
    return [
        Article(
            id=i,
            title=e.title,
            summary=e.summary,
            link=e.link,
            authors=tuple(e.authors),
            categories=tuple(e.categories),
            published=e.published or NOW,
            first_seen=NOW,
        )
        for i, e in enumerate(parsed.entries, start=1)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="subscribers (default 100)")
    parser.add_argument("--repeat", type=int, default=10, help="timings taken (default 10)")
    args = parser.parse_args(argv)
    terms = ("bilevel optimization", "RLHF", "reward", "objectives", "Schrodinger bridge")
    matcher = Matcher(_articles())
    renderer = Renderer(
        NewsletterSettings(from_addr="Digest <digest@example.org>", list_id="digest.example.org")
    )
    reqs: list[DigestRequest] = []
    for i in range(args.n):
        p = Profile(email=f"reader{i}@example.org", keywords=tuple(Keyword(t) for t in terms))
        matches: list[Match] = matcher.match(p, limit=10)
        reqs.append(
            DigestRequest(
                profile=p,
                matches=tuple(matches),
                day=date(2026, 11, 22),
                period="2026-11-22",
                unsubscribe_url="https://news.example.org/unsubscribe/tok",
            )
        )
    seen: dict[str, Any] = {}
    real = reflow_body

    def spy(raw: bytes, encoded: list[bytes]) -> Any:
        seen["args"] = (raw, list(encoded))
        return real(raw, encoded)

    setattr(renderer_module, "reflow_body", spy)  # noqa: B010 (catch one text body)
    for req in reqs:
        renderer.render(req)
    setattr(renderer_module, "reflow_body", real)  # noqa: B010
    raw, encoded = seen["args"]
    render = min(
        timeit.repeat(lambda: [renderer.render(r) for r in reqs], number=1, repeat=args.repeat)
    )
    reflow = min(timeit.repeat(lambda: real(raw, encoded), number=100, repeat=args.repeat)) / 100
    per_email = render / len(reqs)
    print(
        f"render (fast path, reflow included): {per_email * 1e6:.0f} us per email; "
        f"reflow alone: {reflow * 1e6:.0f} us ({reflow / per_email:.0%})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
