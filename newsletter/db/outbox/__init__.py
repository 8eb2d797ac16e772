"""The outbox: one ``digests`` row per (subscriber, period), the unit of exactly-once.

States::

    pending --claim--> pending (leased) --mark_sending--> sending --> sent
                                  |                          |
                                  +--> skipped               +--> pending (temporary, retry)
                                  (nothing new, superseded)  +--> failed (permanent)

Every transition is a compare-and-set ``UPDATE ... WHERE status = ... AND claimed_by =
me``: a worker that lost its claim (lease expired, row superseded, settled by hand)
finds nothing to update and backs off. Claims never block: PostgreSQL uses ``FOR UPDATE
SKIP LOCKED``; SQLite serialises writers already (``BEGIN IMMEDIATE`` in ``db.core``).

A row in ``sending`` is never picked up again automatically: the process that set it
may have handed the message to the server just before dying. ``settle`` resolves it.

A ``pending`` row whose subscriber is due for a newer period is closed as ``skipped``
(superseded) and hands its entries on: the newer row's ``window_start`` moves back to
where the old one began ("starts no later than"), which the claim reads. Windows may
always start earlier than strictly needed: an entry already in one of the subscriber's
digests is never composed again, so nothing is sent twice.

The package, one module per concern:

- ``transitions``: the states above and every move between them;
- ``bulk``: several transitions in one transaction, for group commit;
- ``plan``: which rows exist (who is due) and what each subscriber has had;
- ``admin``: the operator's view (``status``, ``resend``) and settling by hand.
- ``queued``: which digests a queued batch task may name, and who holds which.

It may import ``db.core``, ``db.leases``, ``db.suppressions`` and ``models``; nothing
above the database.
"""

from __future__ import annotations

from newsletter.db.outbox.transitions import (
    FAILED,
    PENDING,
    SENDING,
    SENT,
    SKIPPED,
    STATES,
    Claim,
    MarkResult,
    claim_batch,
    forget_entries,
    mark_failed,
    mark_sending,
    next_retry_at,
    pending_count,
    release_claims,
    release_worker,
    renew_claims,
    reschedule,
)

__all__ = [
    "FAILED",
    "PENDING",
    "SENDING",
    "SENT",
    "SKIPPED",
    "STATES",
    "Claim",
    "MarkResult",
    "claim_batch",
    "forget_entries",
    "mark_failed",
    "mark_sending",
    "next_retry_at",
    "pending_count",
    "release_claims",
    "release_worker",
    "renew_claims",
    "reschedule",
]
