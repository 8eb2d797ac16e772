"""``python -m benchmarks.outbox_pg``: how many outbox transitions a second PostgreSQL takes.

A queued send ends in the one outbox every worker writes: each digest is claimed (in
its batch's ``UPDATE``), marked ``sending`` with its entries before its DATA, and
marked ``sent`` after it — three transitions. However many workers compose and
deliver, they cannot send faster than the database takes those writes, so this is the
ceiling for adding workers.

Here P processes do exactly those writes with the product's own functions
(``claim_batch``; ``OutboxMarks``, the group commit a send uses, from as many threads
as a send has SMTP connections) for every digest of a fresh schema, with nothing
composed and nothing sent: an SMTP server that answers at once. The figure is digests
and transitions per second over all processes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks.services import (
    Unavailable,
    clear_outbox,
    load_average,
    postgres_schema,
)
from benchmarks.workload import store_workload

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"
TRANSITIONS_PER_DIGEST = 3  # claim, sending, sent
LEASE = timedelta(minutes=5)


def plan(db_url: str) -> int:
    """A pending digest for every subscriber; how many."""
    from sqlalchemy import select

    from newsletter.db import session_scope
    from newsletter.db.core import connect
    from newsletter.db.outbox.plan import ensure_digests
    from newsletter.models import Subscriber

    engine = connect(db_url, migrate=False)
    try:
        with session_scope(engine) as session:
            ids = list(session.scalars(select(Subscriber.id)))
            return ensure_digests(session, [(i, "bench") for i in ids], now=datetime.now(UTC))
    finally:
        engine.dispose()


def _entry_ids(db_url: str) -> list[int]:
    from sqlalchemy import select

    from newsletter.db import session_scope
    from newsletter.db.core import connect
    from newsletter.models import Entry

    engine = connect(db_url, migrate=False)
    try:
        with session_scope(engine) as session:
            return list(session.scalars(select(Entry.id).order_by(Entry.id)))
    finally:
        engine.dispose()


def _mark(
    marks: Any, claims: Sequence[Any], entries: Sequence[int], threads: int, per_digest: int
) -> None:
    """Mark each claimed digest ``sending`` then ``sent`` from ``threads`` "connections"."""
    from newsletter.db.outbox.bulk import SendingMark, SentMark

    now = datetime.now(UTC)
    todo = list(claims)
    lock = threading.Lock()

    def connection() -> None:
        while True:
            with lock:
                if not todo:
                    return
                c = todo.pop()
            picked = [entries[(c.id * 7 + k) % len(entries)] for k in range(per_digest)]
            result = marks.sending(
                SendingMark(
                    digest_id=c.id,
                    subscriber_id=c.subscriber_id,
                    subject="Your research digest",
                    message_id=f"<{c.id}@bench.example>",
                    window_start=now - timedelta(days=1),
                    window_end=now,
                    entries=tuple((e, 1.0) for e in dict.fromkeys(picked)),
                    lease_until=now + LEASE,
                )
            )
            if result != "ok":
                raise RuntimeError(f"digest {c.id}: sending mark {result}")
            marks.sent(SentMark(c.id, "250 ok", datetime.now(UTC)))

    pool = [threading.Thread(target=connection) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    marks.flush()


def drain(db_url: str, batch: int, threads: int, per_digest: int, out: Any) -> None:
    """One process: claim batches until none is left, mark each digest sending then sent."""
    from newsletter.db import outbox, session_scope
    from newsletter.db.core import connect
    from newsletter.db.leases import new_worker_id
    from newsletter.pipeline.group_commit import OutboxMarks

    engine = connect(db_url, migrate=False)
    entries = _entry_ids(db_url)
    worker = new_worker_id()
    marks = OutboxMarks(engine, worker)
    done = claims = 0
    started = time.perf_counter()
    try:
        while True:
            with session_scope(engine) as session:
                got = outbox.claim_batch(
                    session, worker, now=datetime.now(UTC), limit=batch, lease=LEASE
                )
            if not got:
                break
            claims += 1
            _mark(marks, got, entries, threads, per_digest)
            done += len(got)
    finally:
        engine.dispose()
    out.send((done, claims, marks.transactions, time.perf_counter() - started))


def measure(
    db_url: str, processes: int, batch: int, threads: int, per_digest: int
) -> dict[str, Any]:
    clear_outbox(db_url)
    n = plan(db_url)
    ctx = multiprocessing.get_context("fork")
    pipes = [ctx.Pipe() for _ in range(processes)]
    procs = [
        ctx.Process(target=drain, args=(db_url, batch, threads, per_digest, child))
        for _, child in pipes
    ]
    started = time.perf_counter()
    for p in procs:
        p.start()
    results = [parent.recv() for parent, _ in pipes]
    wall = time.perf_counter() - started
    for p in procs:
        p.join()
    done = sum(r[0] for r in results)
    if done != n:
        raise RuntimeError(f"{done} of {n} digests went through the outbox")
    # Timed from the first claim to the last mark, over all processes (start-up excluded).
    busy = max(r[3] for r in results)
    return {
        "processes": processes,
        "digests": done,
        "seconds": round(busy, 3),
        "wall_seconds": round(wall, 3),
        "digests_per_second": round(done / busy, 1),
        "transitions_per_second": round(TRANSITIONS_PER_DIGEST * done / busy, 1),
        "transactions": sum(r[1] + r[2] for r in results),
        "load": load_average(),
    }


def table(rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| processes | digests | seconds | digests/s | transitions/s | transactions | load |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['processes']} | {r['digests']:,} | {r['seconds']:.2f} | "
        f"{r['digests_per_second']:,.0f} | {r['transitions_per_second']:,.0f} | "
        f"{r['transactions']:,} | {r['load']} |"
        for r in rows
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.outbox_pg", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--n", type=int, default=5000, help="digests (one per subscriber)")
    ap.add_argument("--processes", default="1,2,4,8", help="writing processes, comma-separated")
    ap.add_argument("--batch", type=int, default=100, help="digests per claim")
    ap.add_argument("--threads", type=int, default=4, help="marking threads (SMTP connections)")
    ap.add_argument("--entries-per-digest", type=int, default=10)
    ap.add_argument("--out", type=Path, default=RESULTS / "outbox_pg.json")
    args = ap.parse_args(argv)
    counts = [int(x) for x in str(args.processes).split(",") if x.strip()]
    try:
        with postgres_schema(prefix="bo") as db_url:
            store_workload(db_url, args.n, 200, 42, now=datetime.now(UTC))
            rows = [
                measure(db_url, p, args.batch, args.threads, args.entries_per_digest)
                for p in counts
            ]
    except Unavailable as e:
        print(f"outbox benchmark skipped: {e}")
        return 0
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "batch": args.batch,
        "threads": args.threads,
        "entries_per_digest": args.entries_per_digest,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(
        f"Outbox on PostgreSQL: claim -> sending -> sent, {args.batch} digests per claim, "
        f"{args.threads} marking threads per process, {args.entries_per_digest} entries "
        f"per digest, {os.cpu_count()} cores"
    )
    print(table(rows))
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
