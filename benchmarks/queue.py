"""``python -m benchmarks.queue``: the send through Celery workers, measured on this machine.

The workload of :mod:`benchmarks.run` (same seed: N subscribers, the entries recombined
from the sample feeds) goes into a fresh schema on PostgreSQL, and is sent to the SMTP
sink of :mod:`benchmarks.smtp_sink` four ways, the outbox cleared between them:

- **local send**: ``send_due`` in this process (what ``newsletter send`` does without a
  queue, composing in-process), the reference a queue has to beat;
- **in-process tasks**: the planned batches, each run here by the product's batch task
  (``Task.apply``: the same code a worker runs, no broker);
- **1 worker**, **2 workers**: the same batches queued on a Redis server started here,
  taken by ``newsletter worker --concurrency 1`` processes.

Times come from Celery's own task events (``task-succeeded``: when, and the task's
runtime inside the worker), so the overhead of the broker per batch is the time a
worker spends per batch outside the task body. A round of empty tasks (naming no
claimable digest) measures that overhead alone, without composing. Without PostgreSQL
or redis-server the benchmark says why and exits 0 (``make bench`` goes on).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.services import (
    RedisServer,
    Unavailable,
    clear_outbox,
    load_average,
    postgres_schema,
)
from benchmarks.smtp_sink import SmtpSink
from benchmarks.workload import store_workload

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SECRET_ENV = "NEWSLETTER_BENCH_SECRET"
SECRET = "benchmark-secret-" + "x" * 32
QUEUE = "bench"


def write_config(path: Path, db_url: str, broker_url: str, smtp_port: int, batch: int) -> Path:
    """A configuration the workers and this process share (the sink's port changes)."""
    path.write_text(
        f"""[database]
url = "{db_url}"

[newsletter]
delivery = "smtp"
from = "Research Digest <digest@bench.example>"
base_url = "https://digest.bench.example"
list_id = "digest.bench.example"
unsubscribe_mailto = "unsubscribe@bench.example"
outbox_dir = "{path.parent / "outbox"}"
secret_key_env = "{SECRET_ENV}"
batch_size = 500

[smtp]
host = "127.0.0.1"
port = {smtp_port}
connections = 4
max_per_connection = 1000

[queue]
broker_url = "{broker_url}"
batch_size = {batch}
queue = "{QUEUE}"
""",
        encoding="utf-8",
    )
    return path


class TaskEvents:
    """Celery's ``task-succeeded``/``task-failed`` events, collected in a thread."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.done: list[dict[str, Any]] = []
        self.failed: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._ready = threading.Event()
        self._receiver: Any = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="task-events")

    def _run(self) -> None:
        with self.app.connection_for_read() as conn:
            recv = self.app.events.Receiver(
                conn,
                handlers={"task-succeeded": self._on_done, "task-failed": self._on_failed},
            )
            self._receiver = recv
            recv.on_consume_ready = lambda *_a, **_k: self._ready.set()
            recv.capture(limit=None, timeout=None, wakeup=False)

    def _on_done(self, event: dict[str, Any]) -> None:
        with self._cond:
            self.done.append(event)
            self._cond.notify_all()

    def _on_failed(self, event: dict[str, Any]) -> None:
        with self._cond:
            self.failed.append(event)
            self._cond.notify_all()

    def __enter__(self) -> TaskEvents:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("could not listen to the workers' task events")
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._receiver is not None:
            self._receiver.should_stop = True
        self._thread.join(10)

    def take(self, n: int, timeout: float) -> list[dict[str, Any]]:
        """Wait for ``n`` more finished tasks; their success events (failures raise)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.done) + len(self.failed) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"only {len(self.done)} of {n} tasks finished in time")
                self._cond.wait(left)
            done, failed = self.done, self.failed
            self.done, self.failed = [], []
        if failed:
            raise RuntimeError(f"{len(failed)} task(s) failed: {failed[0].get('exception')}")
        return done


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env[SECRET_ENV] = SECRET
    return env


def start_workers(cfg: Path, n: int) -> list[subprocess.Popen[bytes]]:
    procs = []
    for i in range(n):
        log = (cfg.parent / f"worker{i + 1}.log").open("wb")
        cmd = [sys.executable, "-m", "newsletter", "--config", str(cfg), "worker"]
        cmd += ["--concurrency", "1", "--hostname", f"bench{i + 1}@%h", "--loglevel", "WARNING"]
        procs.append(
            subprocess.Popen(
                cmd,
                cwd=cfg.parent,
                env=_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    return procs


def stop_workers(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)  # warm shutdown of the node and its child
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)


def wait_for_workers(app: Any, n: int, procs: Sequence[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("a worker exited at start (see worker*.log in the work folder)")
        if len(app.control.ping(timeout=0.5) or []) >= n:
            return
    raise RuntimeError(f"{n} worker(s) did not answer within 90 s")


def _outbox_counts(db_url: str) -> dict[str, int]:
    from sqlalchemy import func, select

    from newsletter.db import session_scope
    from newsletter.db.core import connect
    from newsletter.models import Digest

    engine = connect(db_url, migrate=False)
    try:
        with session_scope(engine) as session:
            rows = session.execute(select(Digest.status, func.count()).group_by(Digest.status))
            return {str(status): int(n) for status, n in rows}
    finally:
        engine.dispose()


def _row(mode: str, workers: int, batches: int, seconds: float, task_ms: float) -> dict[str, Any]:
    return {
        "mode": mode,
        "workers": workers,
        "batches": batches,
        "seconds": round(seconds, 3),
        "task_ms": round(task_ms, 1),
    }


def _finish_row(row: dict[str, Any], db_url: str, received: int) -> dict[str, Any]:
    counts = _outbox_counts(db_url)
    row["sent"] = counts.get("sent", 0)
    row["skipped"] = counts.get("skipped", 0)
    row["not_settled"] = sum(n for s, n in counts.items() if s not in ("sent", "skipped"))
    row["sink_received"] = received
    row["messages_per_second"] = round(row["sent"] / row["seconds"], 1) if row["seconds"] else 0
    row["batch_ms"] = round(1000 * row["seconds"] / max(1, row["batches"]), 1)
    if row["workers"]:  # time per batch per worker not spent in the task: the queue's cost
        per_worker = 1000 * row["seconds"] * row["workers"] / max(1, row["batches"])
        row["broker_ms_per_batch"] = round(per_worker - row["task_ms"], 1)
    row["load"] = load_average()
    return row


def local_send(cfg: Path) -> dict[str, Any]:
    """``send_due`` in this process, composing here: one machine, no queue."""
    from newsletter.config import load_settings
    from newsletter.db.core import connect
    from newsletter.delivery import make_sender
    from newsletter.pipeline.send import send_due
    from newsletter.pipeline.send_report import SendOptions

    settings = load_settings(str(cfg))
    engine = connect(settings.database.url, migrate=False)
    try:
        with make_sender(settings) as sender:
            started = time.perf_counter()
            summary = send_due(
                engine, settings, sender, options=SendOptions(force=True, wait_for_retries=False)
            )
            seconds = time.perf_counter() - started
    finally:
        engine.dispose()
    if summary.error or summary.failed:
        raise RuntimeError(f"the local send failed: {summary.error or summary.failures[:3]}")
    batch = settings.newsletter.batch_size
    batches = -(-(summary.sent + summary.skipped) // batch)
    return _row("local send", 0, batches, seconds, 1000 * seconds / max(1, batches))


def in_process_tasks(cfg: Path) -> dict[str, Any]:
    """The planned batches run here by the batch task, one after the other (no broker)."""
    from newsletter.config import load_settings
    from newsletter.db.core import connect
    from newsletter.pipeline.batch import plan_batches
    from newsletter.pipeline.send_report import SendOptions
    from newsletter.workers.app import make_app
    from newsletter.workers.tasks import TASK_SEND_BATCH

    settings = load_settings(str(cfg))
    engine = connect(settings.database.url, migrate=False)
    try:
        batches = plan_batches(engine, settings, SendOptions(force=True), now=datetime.now(UTC))
    finally:
        engine.dispose()
    task = make_app(settings).tasks[TASK_SEND_BATCH]
    started = time.perf_counter()
    for batch in batches:
        task.apply(args=[batch]).get()
    seconds = time.perf_counter() - started
    return _row("in-process tasks", 0, len(batches), seconds, 1000 * seconds / max(1, len(batches)))


def empty_tasks_in_process(cfg: Path, n: int) -> float:
    """Milliseconds per batch task that finds nothing to claim, run here."""
    from newsletter.config import load_settings
    from newsletter.workers.app import make_app
    from newsletter.workers.tasks import TASK_SEND_BATCH

    task = make_app(load_settings(str(cfg))).tasks[TASK_SEND_BATCH]
    task.apply(args=[[-1]]).get()  # the engine and the sender's first import
    started = time.perf_counter()
    for i in range(n):
        task.apply(args=[[-1 - i]]).get()
    return 1000 * (time.perf_counter() - started) / n


def through_workers(cfg: Path, workers: int, empty: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The planned batches queued for ``workers`` worker processes; and, first, ``empty``
    empty tasks through the same workers (warming them up, measuring the queue alone)."""
    from newsletter.config import load_settings
    from newsletter.db.core import connect
    from newsletter.pipeline.batch import plan_batches
    from newsletter.pipeline.send_report import SendOptions
    from newsletter.workers.app import enqueue, make_app

    settings = load_settings(str(cfg))
    app = make_app(settings)
    procs = start_workers(cfg, workers)
    try:
        wait_for_workers(app, workers, procs)
        with TaskEvents(app) as events:
            # Empty tasks (ids no digest has): every worker process warm, the queue alone.
            enqueue(app, [[-1 - i] for i in range(max(empty, 2 * workers))])
            events.take(max(empty, 2 * workers), timeout=120)
            started = time.time()
            enqueue(app, [[-1 - i] for i in range(empty)])
            got = events.take(empty, timeout=120)
            idle = _row("empty tasks", workers, empty, _span(started, got), _runtime_ms(got))
            engine = connect(settings.database.url, migrate=False)
            try:
                batches = plan_batches(
                    engine, settings, SendOptions(force=True), now=datetime.now(UTC)
                )
            finally:
                engine.dispose()
            started = time.time()
            enqueue(app, batches)
            got = events.take(len(batches), timeout=600)
            name = f"{workers} worker" + ("s" if workers > 1 else "")
            row = _row(name, workers, len(batches), _span(started, got), _runtime_ms(got))
            hosts = {str(e.get("hostname")) for e in got}
            row["workers_seen"] = len(hosts)
    finally:
        stop_workers(procs)
    return row, idle


def _span(started: float, events: Sequence[dict[str, Any]]) -> float:
    return max(float(e["timestamp"]) for e in events) - started if events else 0.0


def _runtime_ms(events: Sequence[dict[str, Any]]) -> float:
    return 1000 * sum(float(e.get("runtime") or 0.0) for e in events) / max(1, len(events))


COLUMNS = (
    ("mode", "mode", "{}"),
    ("digests sent", "sent", "{:,}"),
    ("sink got", "sink_received", "{:,}"),
    ("batches", "batches", "{:,}"),
    ("seconds", "seconds", "{:.2f}"),
    ("msgs/s", "messages_per_second", "{:,.0f}"),
    ("ms/batch", "batch_ms", "{:,.1f}"),
    ("ms in task", "task_ms", "{:,.1f}"),
    ("queue ms/batch", "broker_ms_per_batch", "{:,.1f}"),
    ("load", "load", "{}"),
)


def table(rows: Sequence[dict[str, Any]]) -> str:
    head = "| " + " | ".join(c[0] for c in COLUMNS) + " |"
    rule = "|---|" + "|".join("---:" for _ in COLUMNS[1:]) + "|"
    lines = [
        "| " + " | ".join(fmt.format(r[key]) if key in r else "-" for _, key, fmt in COLUMNS) + " |"
        for r in rows
    ]
    return "\n".join([head, rule, *lines])


def run(
    n: int, entries: int, seed: int, batch: int, empty: int, modes: Sequence[int]
) -> dict[str, Any]:
    """Every mode on one workload; the rows of the table and the empty-task figures."""
    rows: list[dict[str, Any]] = []
    idle: list[dict[str, Any]] = []
    os.environ[SECRET_ENV] = SECRET
    steps: list[tuple[str, int]] = [("local", 0), ("tasks", 0)]
    steps += [("workers", w) for w in modes]
    with (
        postgres_schema(prefix="bq") as db_url,
        RedisServer() as redis,
        tempfile.TemporaryDirectory(prefix="newsletter-bench-queue-") as tmp,
    ):
        cfg_path = Path(tmp) / "newsletter.toml"
        store_workload(db_url, n, entries, seed, now=datetime.now(UTC))
        for kind, workers in steps:
            clear_outbox(db_url)
            with SmtpSink() as sink:
                cfg = write_config(cfg_path, db_url, redis.url, sink.port, batch)
                if kind == "local":
                    row = local_send(cfg)
                elif kind == "tasks":
                    row = in_process_tasks(cfg)
                    ms = empty_tasks_in_process(cfg, empty)
                    idle.append(_row("empty tasks", 0, empty, ms * empty / 1000, ms))
                else:
                    row, empty_row = through_workers(cfg, workers, empty)
                    idle.append(empty_row)
            rows.append(_finish_row(row, db_url, sink.messages))
    for r in idle:
        r["task_ms"] = round(r["task_ms"], 2)
        r["ms_per_task"] = round(1000 * r["seconds"] / max(1, r["batches"]), 2)
        if r["workers"]:
            r["broker_ms_per_task"] = round(r["ms_per_task"] * r["workers"] - r["task_ms"], 2)
    return {
        "n_subscribers": n,
        "n_entries": entries,
        "batch_size": batch,
        "rows": rows,
        "empty": idle,
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.queue", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--n", type=int, default=2000, help="subscribers")
    ap.add_argument("--entries", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--batch", type=int, default=100, help="digests per task ([queue] batch_size)")
    ap.add_argument("--empty", type=int, default=50, help="empty tasks per mode")
    ap.add_argument("--workers", default="1,2", help="worker counts, comma-separated")
    ap.add_argument("--out", type=Path, default=RESULTS / "queue.json")
    args = ap.parse_args(argv)
    modes = [int(x) for x in str(args.workers).split(",") if x.strip()]
    try:
        import celery  # noqa: F401
    except ImportError as e:
        print(f"queue benchmark skipped: Celery is not installed ({e})")
        return 0
    try:
        report = run(args.n, args.entries, args.seed, args.batch, args.empty, modes)
    except Unavailable as e:
        print(f"queue benchmark skipped: {e}")
        return 0
    report["date"] = datetime.now(UTC).isoformat(timespec="seconds")
    report["cpu_count"] = os.cpu_count()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(
        f"Queue mode: {args.n:,} subscribers, {args.entries:,} entries, {args.batch} digests "
        f"per task, PostgreSQL outbox, Redis broker, {os.cpu_count()} cores"
    )
    print(table(report["rows"]))
    print()
    print("Empty tasks (nothing to claim): the queue's own cost per task")
    for r in report["empty"]:
        where = f"{r['workers']} worker(s)" if r["workers"] else "in-process"
        extra = f", {r['broker_ms_per_task']} ms of it outside the task" if r["workers"] else ""
        print(f"  {where}: {r['ms_per_task']} ms per task{extra}")
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
