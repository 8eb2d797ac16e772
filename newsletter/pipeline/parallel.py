"""Composing on every core: :class:`ProcessComposer` splits each batch over processes.

Composing is read-only and CPU-bound (matching, rendering, MIME), so it is the part of a
send worth spreading; claims and every outbox transition stay in the calling process.
"""

from __future__ import annotations

import gc
import multiprocessing
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from time import perf_counter, process_time

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from newsletter.config import Settings
from newsletter.db import core as db_core
from newsletter.pipeline.compose import Composer
from newsletter.pipeline.jobs import ComposeFn, DigestJob, Draft

_worker: tuple[Engine, Composer] | None = None  # set in each worker process


def _init_worker(url: str, composer: Composer) -> None:
    # Forked: ``composer`` is the parent's, with its compiled templates, key and
    # matching index; the database connections must be this process's own.
    # What the parent made is kept for the worker's life: out of the collector's way,
    # full collections walk only what the worker makes (and leave the inherited pages
    # shared instead of writing to every object's header).
    gc.freeze()
    global _worker
    _worker = (db_core.connect(url, migrate=False, read_only=True), composer)


def _compose_timed(
    composer: Composer,
    session: Session,
    requests: Sequence[DigestJob],
) -> tuple[dict[int, Draft | None], dict[str, float]]:
    """Compose, and say how long it took: wall and CPU seconds of this process in total,
    and the CPU seconds of each stage when the renderer measures them."""
    timings = composer.renderer.timings
    if timings is not None:
        timings.clear()
    started, cpu = perf_counter(), process_time()
    drafts = dict(composer(session, requests))
    spent = dict(timings or {})
    spent["compose"] = perf_counter() - started
    spent["compose_cpu"] = process_time() - cpu
    return drafts, spent


def _compose_in_worker(
    requests: Sequence[DigestJob],
) -> tuple[dict[int, Draft | None], dict[str, float]]:
    if _worker is None:
        raise RuntimeError("not a ProcessComposer worker")
    engine, composer = _worker
    with Session(engine) as session:
        return _compose_timed(composer, session, requests)


class ProcessComposer:
    """A :data:`ComposeFn` that splits each batch across ``workers`` forked processes.

    Composing is read-only and CPU-bound (matching, rendering, MIME), so it is the part
    of a send worth spreading over the cores; claims and every outbox transition stay
    in the calling process, under the same leases, so exactly-once is untouched. The
    workers are forked on first use, after this process built the composer (compiled
    templates, signing key) and the matching index of the first batch's entries: they
    share those pages instead of rebuilding them. Each
    reads the database through its own connection, so it sees what the caller
    committed (its claims) before calling; SQLite's WAL lets them read while the
    caller holds its write lock.

    ``timings`` (optional) accumulates seconds: ``compose_wall`` (the caller waiting),
    ``compose`` (wall seconds summed over the workers), ``compose_cpu`` (the workers'
    process CPU seconds, summed) and, when the renderer measures them
    (``composer.renderer.timings`` set), the CPU seconds of each stage (``db``,
    ``match``, ``tokens``, ``cards``, ``view``, ``html``, ``text``, ``mime``; ``render``
    holds the last five).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        workers: int = 2,
        composer: Composer | None = None,
        timings: dict[str, float] | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.settings = settings
        self.workers = workers
        self.composer = composer or Composer(settings, body_8bit=True)  # a send's
        self.timings = timings
        self._pool: ProcessPoolExecutor | None = None

    def _get_pool(self, session: Session, requests: Sequence[DigestJob]) -> ProcessPoolExecutor:
        if self._pool is None:
            # The first batch's index, built here before forking: every worker
            # inherits it instead of building its own.
            self.composer.warm(session, requests)
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("fork"),
                initializer=_init_worker,
                initargs=(self.settings.database.url, self.composer),
            )
        return self._pool

    def __call__(self, session: Session, requests: Sequence[DigestJob]) -> dict[int, Draft | None]:
        if not requests:
            return {}
        started = perf_counter()
        if self.workers == 1 or len(requests) < 2 * self.workers:
            out, spent = _compose_timed(self.composer, session, requests)
            self._add(spent)
        else:
            size = -(-len(requests) // self.workers)
            slices = [requests[i : i + size] for i in range(0, len(requests), size)]
            out = {}
            try:
                pool = self._get_pool(session, requests)
                results = list(pool.map(_compose_in_worker, [list(s) for s in slices]))
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
