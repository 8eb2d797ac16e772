"""Delivering one batch while the next is composed: the next batch's claims stay held."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine

from newsletter.config import settings_from_mapping
from newsletter.db import outbox, session_scope
from newsletter.db.outbox import plan as outbox_plan
from newsletter.delivery import OutgoingMessage, Receipt, Sender
from newsletter.pipeline.context import Clock, RunContext
from newsletter.pipeline.deliver import Delivery
from newsletter.pipeline.jobs import DigestJob, Draft
from newsletter.pipeline.send_report import Outcome, SendOptions
from tests.support.sending import add_entries, add_subscribers, digests

LEASE = timedelta(seconds=3)  # renewed every second of real time while delivering


class SlowSender(Sender):
    """Takes longer than a lease renewal period per message, like a throttled server."""

    def send(
        self, message: OutgoingMessage, before_data: Callable[[], None] = lambda: None
    ) -> Receipt:
        time.sleep(1.6)
        before_data()
        return Receipt(reply="250 ok", message_id=message.message_id)


def test_a_slow_delivery_keeps_the_next_batch_leased(engine: Engine, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    a, b = add_subscribers(engine, ["a@example.org", "b@example.org"])
    (e1,) = add_entries(engine, ["Bilevel optimization"], first_seen=now - timedelta(hours=1))
    with session_scope(engine) as s:
        outbox_plan.ensure_digests(s, [(a, "p"), (b, "p")], now=now)
    with session_scope(engine) as s:
        current, following = outbox.claim_batch(s, "w1", now=now, limit=2, lease=LEASE)
    counted: list[Outcome] = []
    ctx = RunContext(
        engine=engine,
        settings=settings_from_mapping({}, base_dir=tmp_path),
        sender=SlowSender(),
        options=SendOptions(lease=LEASE),
        clock=Clock(now=lambda: datetime.now(UTC), sleep=time.sleep),
        stop=threading.Event(),
        worker="w1",
        rng=random.Random(0),
    )
    delivery = Delivery(ctx, count=lambda outcome, recipient, reason=None: counted.append(outcome))
    draft = Draft(a, "a@example.org", "Digest", "<m1@x>", b"Subject: x\r\n\r\nhi\r\n", ((e1, 1.0),))
    req = DigestJob(a, "p", now - timedelta(days=1), now, digest_id=current.id)
    delivery.deliver([(current, req, draft)], also_held=[following.id])
    assert counted == ["sent"]
    rows = {d.id: d for d in digests(engine)}
    assert rows[current.id].status == "sent"
    # The next batch's digest is still ours, its lease renewed past the first one's end.
    assert rows[following.id].claimed_by == "w1"
    assert rows[following.id].lease_until is not None
    assert rows[following.id].lease_until > now + LEASE
