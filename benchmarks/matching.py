"""``python -m benchmarks.matching``: matching alone, process CPU, on the benchmark workload.

What the composing workers spend in the ``match`` stage, without the database: one
:class:`~newsletter.matching.Matcher` over ``--entries`` articles (the index), then,
``--batch`` profiles at a time, ``prepare`` and :func:`digest_picks` for each, as
:meth:`Composer.compose` does. Prints one JSON line of figures.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence

from benchmarks.workload import load_corpus, make_articles, make_profiles
from newsletter.matching import Matcher, digest_picks


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.matching")
    ap.add_argument("--n", type=int, default=10_000, help="profiles")
    ap.add_argument("--entries", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--limit", type=int, default=10)
    ap.add_argument("--profile", help="write a cProfile of the matching to this file")
    args = ap.parse_args(argv)
    corpus = load_corpus()
    articles = make_articles(corpus, args.entries, args.seed)
    profiles = make_profiles(corpus, args.n, args.seed)
    ids = frozenset(a.id for a in articles)
    load = os.getloadavg()[0]
    cpu = time.process_time()
    matcher = Matcher(articles)
    index = time.process_time() - cpu
    prof = None
    if args.profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    cpu = time.process_time()
    shown = 0
    for i in range(0, len(profiles), args.batch):
        batch = profiles[i : i + args.batch]
        matcher.prepare(batch)
        for p in batch:
            shown += len(
                digest_picks(matcher, p, candidates=ids, limit=args.limit, trending_candidates=ids)
            )
    spent = time.process_time() - cpu
    if prof is not None:
        prof.disable()
        prof.dump_stats(args.profile)
    print(
        json.dumps(
            {
                "profiles": len(profiles),
                "entries": len(articles),
                "index_cpu_seconds": round(index, 3),
                "match_cpu_us_per_email": round(spent / len(profiles) * 1e6, 1),
                "match_and_index_cpu_us_per_email": round((spent + index) / len(profiles) * 1e6, 1),
                "picks": shown,
                "load_before": round(load, 2),
                "load_after": round(os.getloadavg()[0], 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
