"""``python -m benchmarks.web_sync``: what a More/Fewer click's sync costs, by folder size.

Writes ``--profiles`` profile files into a temporary subscribers folder, syncs them
into a SQLite database, then times (median of ``--runs``) re-syncing after one file
changed: the whole folder (``sync_directory``, what a click did before) and that one
file (``sync_file``, what it does now). A benchmark, not a test: the figures depend on
the machine and its load.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from newsletter.db import connect, session_scope
from newsletter.pipeline.sync import sync_directory, sync_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "subscribers"
        folder.mkdir()
        for i in range(args.profiles):
            (folder / f"s{i}.yaml").write_text(
                f"email: s{i}@example.org\nkeywords: [graph neural network, topic {i}]\n"
            )
        engine = connect(f"sqlite:///{tmp}/bench.db")
        with session_scope(engine) as session:
            sync_directory(session, folder, now=datetime.now(UTC))
        changed = folder / "s7.yaml"
        timings: dict[str, list[float]] = {"whole folder": [], "one file": []}
        for run in range(args.runs):
            for name in timings:
                changed.write_text(f"email: s7@example.org\nkeywords: [run {run} {name}]\n")
                start = time.perf_counter()
                with session_scope(engine) as session:
                    if name == "whole folder":
                        sync_directory(session, folder, now=datetime.now(UTC))
                    else:
                        sync_file(session, folder, "s7.yaml", now=datetime.now(UTC))
                timings[name].append(time.perf_counter() - start)
        engine.dispose()
    for name, values in timings.items():
        print(f"{name:>12}: {statistics.median(values) * 1000:8.1f} ms ({args.profiles} profiles)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
