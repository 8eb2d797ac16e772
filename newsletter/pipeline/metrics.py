"""The metrics in the Prometheus text format: one snapshot of the database per scrape.

A fresh ``CollectorRegistry`` per call, holding one collector that reads the tables
(:mod:`newsletter.db.metrics`): nothing is counted in process memory, so every web
worker and every ``run`` reports the same numbers. ``/metrics`` (web) and the
node_exporter textfile (``run``, ``send``) share these names.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from newsletter import clock
from newsletter.db import session_scope
from newsletter.db.metrics import Snapshot, read_snapshot

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

QueueDepth = Callable[[], int | None]  # tasks waiting on the broker; None: unreachable


def _ts(at: datetime | None) -> float | None:
    return at.timestamp() if at is not None else None


class SnapshotCollector(Collector):
    """Turns one :class:`Snapshot` (and the queue's depth, if any) into metric families."""

    def __init__(self, snap: Snapshot, queue_depth: int | None, has_queue: bool) -> None:
        self.snap = snap
        self.queue_depth = queue_depth
        self.has_queue = has_queue

    def collect(self) -> Iterator[Metric]:
        s = self.snap
        digests = GaugeMetricFamily(
            "newsletter_digests",
            "Digests in the outbox, by state (sent, failed, skipped, pending, sending).",
            labels=["status"],
        )
        for status, n in sorted(s.digests.items()):
            digests.add_metric([status], n)
        yield digests
        yield GaugeMetricFamily(
            "newsletter_digests_ambiguous",
            "Digests left in 'sending' by a worker that is gone: settle with `newsletter resend`.",
            value=s.ambiguous,
        )
        yield GaugeMetricFamily(
            "newsletter_digests_retry_waiting",
            "Pending digests waiting for another try after a temporary SMTP failure.",
            value=s.retry_waiting,
        )
        yield CounterMetricFamily(
            "newsletter_smtp_retries",
            "Temporary SMTP failures that were retried, over the digests on record.",
            value=s.smtp_retries,
        )
        last = GaugeMetricFamily(
            "newsletter_last_send_timestamp_seconds",
            "When the newest digest was accepted by the mail server (Unix time).",
        )
        if s.last_send is not None:
            last.add_metric([], s.last_send.timestamp())
        yield last
        up = GaugeMetricFamily(
            "newsletter_feed_up", "1 if the feed's last fetch worked, else 0.", labels=["feed"]
        )
        errors = GaugeMetricFamily(
            "newsletter_feed_consecutive_errors",
            "Failed fetches of the feed in a row (0 once one works).",
            labels=["feed"],
        )
        fetched = GaugeMetricFamily(
            "newsletter_feed_last_fetch_timestamp_seconds",
            "When the feed was last fetched, successfully or not (Unix time).",
            labels=["feed"],
        )
        success = GaugeMetricFamily(
            "newsletter_feed_last_success_timestamp_seconds",
            "When the feed was last fetched successfully (Unix time).",
            labels=["feed"],
        )
        sent = GaugeMetricFamily(
            "newsletter_feed_last_send_timestamp_seconds",
            "When a digest holding one of the feed's entries last went out (Unix time; "
            "among the newest 10000 sent digests).",
            labels=["feed"],
        )
        for f in s.feeds:
            up.add_metric([f.name], 1 if f.up else 0)
            errors.add_metric([f.name], f.consecutive_errors)
            for family, at in ((fetched, f.last_fetch), (success, f.last_success)):
                if at is not None:
                    family.add_metric([f.name], at.timestamp())
            if f.last_send is not None:
                sent.add_metric([f.name], f.last_send.timestamp())
        yield from (up, errors, fetched, success, sent)
        if self.has_queue:
            yield GaugeMetricFamily(
                "newsletter_queue_up",
                "1 if the [queue] broker answered.",
                value=int(self.queue_depth is not None),
            )
            depth = GaugeMetricFamily(
                "newsletter_queue_depth", "Send batches waiting on the [queue] broker."
            )
            if self.queue_depth is not None:
                depth.add_metric([], self.queue_depth)
            yield depth


def render_metrics(engine: Engine, *, queue_depth: QueueDepth | None = None) -> bytes:
    """The current metrics as Prometheus text (``queue_depth`` when a [queue] is set)."""
    with session_scope(engine) as session:
        snap = read_snapshot(session, now=clock.now())
    depth = queue_depth() if queue_depth is not None else None
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snap, depth, queue_depth is not None))
    return generate_latest(registry)


def write_textfile(path: Path, engine: Engine, *, queue_depth: QueueDepth | None = None) -> bool:
    """Write the metrics for node_exporter's textfile collector, atomically.

    A temporary file in the same folder, then a rename: the collector never reads half
    a file. A failure is logged, not raised: metrics must never stop a send.
    """
    tmp: str | None = None
    try:
        data = render_metrics(engine, queue_depth=queue_depth)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # node_exporter runs as another user
        os.replace(tmp, path)
        tmp = None
        return True
    except Exception as e:
        log.warning("metrics textfile %s not written: %s", path, e)
        return False
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
