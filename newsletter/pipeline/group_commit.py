"""Group commit of the outbox marks a send's connections ask for.

Every message is marked ``sending`` (committed) before its DATA, and ``sent`` after the
server accepted it. Committing each mark alone costs a transaction per mark, which
caps a run at a few hundred messages a second on SQLite. Here the first connection to
ask becomes the leader: it writes every mark queued so far in one transaction, while
marks that arrive meanwhile queue for the next one. Nobody waits longer than one
commit, and a ``sending`` mark is still committed before its own DATA, so what a crash
can leave ambiguous does not change.

``sent`` marks do not make their connection wait: they ride along with the next
transaction, or the final :meth:`OutboxMarks.flush`. A crash in that short gap leaves
those digests in ``sending`` — listed by ``newsletter status`` and settled with
``newsletter resend``, exactly like a crash between DATA and the old per-message
commit — never sent twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from sqlalchemy import Engine

from newsletter.db import outbox, session_scope
from newsletter.db.outbox.bulk import (
    GroupConflict,
    SendingMark,
    SentMark,
    held_for_group,
    mark_group,
    mark_sending_many,
    mark_sent_many,
)

log = logging.getLogger(__name__)


class _NotAll(Exception):
    """A mark of the group would not succeed: its fast write is rolled back."""


class _Waiter:
    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = False
        self.result: outbox.MarkResult = "lost"
        self.error: BaseException | None = None


class OutboxMarks:
    """The ``sending``/``sent`` marks of one worker, written in groups. Thread-safe."""

    def __init__(self, engine: Engine, worker: str, *, max_group: int = 64) -> None:
        self.engine = engine
        self.worker = worker
        self.max_group = max_group
        self.transactions = 0  # how many groups were written (for the benchmark)
        self._cond = threading.Condition()
        self._sending: list[tuple[SendingMark, _Waiter]] = []
        self._sent: list[SentMark] = []
        self._writing = False

    def sending(self, mark: SendingMark) -> outbox.MarkResult:
        """Mark one digest ``sending``; returns once that is committed (or raises)."""
        waiter = _Waiter()
        with self._cond:
            self._sending.append((mark, waiter))
        while True:
            with self._cond:
                while not waiter.done and self._writing:
                    self._cond.wait()
                if waiter.done:
                    break
                group, sent = self._take()
            self._lead(group, sent)
        if waiter.error is not None:
            raise waiter.error
        return waiter.result

    def sent(self, mark: SentMark) -> None:
        """Queue a ``sent`` mark for the next transaction; never waits."""
        with self._cond:
            self._sent.append(mark)

    def flush(self) -> None:
        """Write every queued mark now (end of a batch, or of the run)."""
        while True:
            with self._cond:
                while self._writing:
                    self._cond.wait()
                if not self._sending and not self._sent:
                    return
                group, sent = self._take()
            self._lead(group, sent)

    # -- the leader --------------------------------------------------------------------

    def _take(self) -> tuple[list[tuple[SendingMark, _Waiter]], list[SentMark]]:
        """Under the lock: become the writer and take what is queued."""
        self._writing = True
        group = self._sending[: self.max_group]
        del self._sending[: self.max_group]
        sent, self._sent = self._sent, []
        return group, sent

    def _lead(self, group: list[tuple[SendingMark, _Waiter]], sent: list[SentMark]) -> None:
        error: BaseException | None = None
        results: dict[int, outbox.MarkResult] = {}
        try:
            results = self._write([m for m, _ in group], sent)
        except BaseException as e:  # every waiter of the group gets it
            error = e
        finally:
            with self._cond:
                for mark, waiter in group:
                    waiter.result = results.get(mark.digest_id, "lost")
                    waiter.error = error
                    waiter.done = True
                self._writing = False
                self._cond.notify_all()
        if error is not None and sent:
            log.error(
                "could not record %d delivered digests as sent (%s); they stay 'sending' "
                "(see `newsletter status`, settle with `newsletter resend`)",
                len(sent),
                error,
            )
        if error is not None and not group:
            raise error

    def _write(
        self, marks: Sequence[SendingMark], sent: Sequence[SentMark]
    ) -> dict[int, outbox.MarkResult]:
        self.transactions += 1
        # Nearly always every mark of a group succeeds: then four statements do it.
        try:
            with session_scope(self.engine) as session:
                fast = mark_group(session, self.worker, marks, sent)
                if fast is None:
                    raise _NotAll  # rolled back: written the careful way below
            return fast[0]
        except _NotAll:
            pass
        try:
            with session_scope(self.engine) as session:
                # Which are still ours, for both kinds of marks in one query (the ids
                # never overlap: a "sent" mark follows its own committed "sending").
                pending: set[int] | None = None
                sending: set[int] | None = None
                to_send, done = [m.digest_id for m in marks], [m.digest_id for m in sent]
                if to_send and done and set(to_send).isdisjoint(done):
                    pending, sending = held_for_group(session, self.worker, to_send, done)
                recorded = mark_sent_many(session, self.worker, sent, held=sending)
                results = mark_sending_many(session, self.worker, marks, held=pending)
        except GroupConflict:
            # Rare (PostgreSQL, a concurrent send of the same subscriber): one by one.
            with session_scope(self.engine) as session:
                recorded = mark_sent_many(session, self.worker, sent)
            results = {m.digest_id: self._one(m) for m in marks}
        for m in sent:
            if m.digest_id not in recorded:
                log.warning(
                    "digest %d was delivered but changed state meanwhile (settled by hand?)",
                    m.digest_id,
                )
        return results

    def _one(self, m: SendingMark) -> outbox.MarkResult:
        with session_scope(self.engine) as session:
            result = outbox.mark_sending(
                session,
                m.digest_id,
                self.worker,
                subscriber_id=m.subscriber_id,
                subject=m.subject,
                message_id=m.message_id,
                window_start=m.window_start,
                window_end=m.window_end,
                entries=m.entries,
                lease_until=m.lease_until,
            )
            if result != "ok":
                session.rollback()
            return result
