"""What the send pipeline asks of composition, and the composer it uses by default.

``send`` hands a batch of :class:`ComposeRequest` (who, which period, which window of
entries is new to them) to a :data:`ComposeFn` and gets back, per subscriber, a
:class:`Draft` — the finished message and the entries it carries — or ``None`` when
nothing new matched. Composing is read-only: the outbox records the entries only when
the message is about to leave.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from time import perf_counter

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from newsletter.config import Settings
from newsletter.db import core as db_core
from newsletter.pipeline.compose import Composer, DigestJob


@dataclass(frozen=True, slots=True)
class ComposeRequest:
    """One digest to compose: for whom, and which window of entries is new to them."""

    digest_id: int
    subscriber_id: int
    period: str
    window_start: datetime  # exclusive: entries first fetched after this
    window_end: datetime  # inclusive: the moment of composing


@dataclass(frozen=True, slots=True)
class Draft:
    """A finished message for one subscriber and the entries it carries."""

    subscriber_id: int
    recipient: str
    subject: str
    message_id: str
    data: bytes
    entries: tuple[tuple[int, float], ...]  # (entry id, score), in rank order


ComposeFn = Callable[[Session, Settings, Sequence[ComposeRequest]], dict[int, Draft | None]]
"""Compose a batch: subscriber id -> its draft, or None when there is nothing new to send.
Side-effect free; may raise for the whole batch (the pipeline then isolates per digest)."""


class ComposerAdapter:
    """The product's composer (:class:`pipeline.compose.Composer`) as a :data:`ComposeFn`.

    One per run: the composer caches compiled templates and the signing key.
    """

    def __init__(self, settings: Settings) -> None:
        self.composer = Composer(settings)

    def __call__(
        self, session: Session, settings: Settings, requests: Sequence[ComposeRequest]
    ) -> dict[int, Draft | None]:
        if not requests:
            return {}
        jobs = [
            DigestJob(r.subscriber_id, r.period, r.window_start, r.window_end) for r in requests
        ]
        # The Date header: now, the moment of composing (every request shares it).
        sent_at = max(r.window_end for r in requests)
        out: dict[int, Draft | None] = dict.fromkeys((r.subscriber_id for r in requests), None)
        for c in self.composer.compose(session, jobs, sent_at=sent_at):
            if c.email is not None:
                out[c.subscriber_id] = Draft(
                    subscriber_id=c.subscriber_id,
                    recipient=c.email.recipient,
                    subject=c.email.subject,
                    message_id=c.email.message_id,
                    data=c.email.data,
                    entries=c.entries,
                )
        return out


# -- composing on every core --------------------------------------------------------------

_worker: tuple[Engine, ComposerAdapter] | None = None  # set in each worker process


def _init_worker(url: str, adapter: ComposerAdapter) -> None:
    # Forked: ``adapter`` is the parent's, with its compiled templates and key; the
    # database connections must be this process's own.
    global _worker
    _worker = (db_core.connect(url, migrate=False, read_only=True), adapter)


def _compose_timed(
    adapter: ComposerAdapter,
    session: Session,
    settings: Settings,
    requests: Sequence[ComposeRequest],
) -> tuple[dict[int, Draft | None], dict[str, float]]:
    """Compose, and say how long it took: in total, and the renderer's own stages."""
    timings = adapter.composer.renderer.timings
    if timings is not None:
        timings.clear()
    started = perf_counter()
    drafts = adapter(session, settings, requests)
    spent = dict(timings or {})
    spent["compose"] = perf_counter() - started
    return drafts, spent


def _compose_in_worker(
    settings: Settings, requests: Sequence[ComposeRequest]
) -> tuple[dict[int, Draft | None], dict[str, float]]:
    if _worker is None:
        raise RuntimeError("not a ProcessComposer worker")
    engine, adapter = _worker
    with Session(engine) as session:
        return _compose_timed(adapter, session, settings, requests)


class ProcessComposer:
    """A :data:`ComposeFn` that splits each batch across ``workers`` forked processes.

    Composing is read-only and CPU-bound (matching, rendering, MIME), so it is the part
    of a send worth spreading over the cores; claims and every outbox transition stay
    in the calling process, under the same leases, so exactly-once is untouched. The
    workers are forked on first use, after this process built the composer (compiled
    templates, signing key): they share those pages instead of rebuilding them. Each
    reads the database through its own connection, so it sees what the caller
    committed (its claims) before calling; SQLite's WAL lets them read while the
    caller holds its write lock.

    ``timings`` (optional) accumulates seconds per stage: ``compose_wall`` (the caller
    waiting), ``compose`` (summed over the workers) and, when the renderer measures
    them (``adapter.composer.renderer.timings`` set), ``render`` and ``mime``.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        workers: int = 2,
        adapter: ComposerAdapter | None = None,
        timings: dict[str, float] | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.settings = settings
        self.workers = workers
        self.adapter = adapter or ComposerAdapter(settings)
        self.timings = timings
        self._pool: ProcessPoolExecutor | None = None

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("fork"),
                initializer=_init_worker,
                initargs=(self.settings.database.url, self.adapter),
            )
        return self._pool

    def __call__(
        self, session: Session, settings: Settings, requests: Sequence[ComposeRequest]
    ) -> dict[int, Draft | None]:
        if not requests:
            return {}
        started = perf_counter()
        if self.workers == 1 or len(requests) < 2 * self.workers:
            out, spent = _compose_timed(self.adapter, session, settings, requests)
            self._add(spent)
        else:
            size = -(-len(requests) // self.workers)
            slices = [requests[i : i + size] for i in range(0, len(requests), size)]
            out = {}
            try:
                results = list(
                    self._get_pool().map(
                        _compose_in_worker, [settings] * len(slices), [list(s) for s in slices]
                    )
                )
            except BrokenProcessPool:
                self.close()  # a worker died (killed, out of memory): start afresh next time
                raise
            for drafts, spent in results:
                out.update(drafts)
                self._add(spent)
        self._add({"compose_wall": perf_counter() - started})
        return out

    def _add(self, spent: dict[str, float]) -> None:
        if self.timings is not None:
            for stage, seconds in spent.items():
                self.timings[stage] = self.timings.get(stage, 0.0) + seconds

    def close(self) -> None:
        """Stop the worker processes (the next call starts new ones)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> ProcessComposer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def composer_for(settings: Settings) -> Iterator[ComposeFn | None]:
    """The composer of ``send`` and ``run``: in-process (None: the default one), or
    ``compose_workers`` forked processes, stopped when the block ends."""
    workers = settings.newsletter.compose_workers
    if workers <= 1:
        yield None
        return
    with ProcessComposer(settings, workers=workers) as composer:
        yield composer
