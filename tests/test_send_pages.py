"""Planning a send page by page: every due digest is created and sent exactly once,
whatever the page size, including across page and batch boundaries.

A send plans :data:`~newsletter.pipeline.plan.PLAN_PAGE` subscribers at a time (so that
it never holds the whole list); these tests shrink the page to two subscribers and the
claim batch to three, so that pages, batches and skipped subscribers fall on every kind
of boundary.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from newsletter.config import Settings, settings_from_mapping
from newsletter.delivery.smtp import SmtpSender
from newsletter.pipeline import plan
from newsletter.pipeline.send import SendOptions, SendSummary, send_due
from tests.support.sending import (
    ManualClock,
    add_entries,
    add_subscribers,
    digests,
    simple_compose,
    utc,
)
from tests.support.smtp import SmtpTestServer

DAY0 = utc(2026, 6, 15, 9, 0)


@pytest.fixture(autouse=True)
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plan, "PLAN_PAGE", 2)


def _settings(server: SmtpTestServer, tmp_path: Path) -> Settings:
    data: dict[str, Any] = {
        "newsletter": {"delivery": "smtp", "from": "Digest <digest@example.org>", "batch_size": 3},
        "smtp": server.smtp_config(),
    }
    return settings_from_mapping(data, base_dir=tmp_path)


def _send(engine: Engine, settings: Settings, clock: ManualClock, **options: Any) -> SendSummary:
    with SmtpSender(settings.smtp, clock=lambda: 0.0, sleep=clock.sleep) as sender:
        return send_due(
            engine,
            settings,
            sender,
            compose=simple_compose,
            options=SendOptions(force=True, **options),
            now=clock.now,
            sleep=clock.sleep,
        )


def _population(engine: Engine) -> tuple[list[str], list[str]]:
    """Seven who may be mailed, with two who may not among them (one at the edge of a
    page, one inside one): (those mailed, those not)."""
    mailed = [f"s{i}@example.org" for i in range(7)]
    add_subscribers(engine, mailed[:3])
    add_subscribers(engine, ["gone@example.org"], deleted_at=DAY0 - timedelta(days=1))
    add_subscribers(engine, mailed[3:5])
    add_subscribers(engine, ["left@example.org"], deleted_at=DAY0 - timedelta(days=1))
    add_subscribers(engine, mailed[5:])
    add_entries(engine, ["Bilevel optimization"], first_seen=DAY0 - timedelta(hours=2))
    return mailed, ["gone@example.org", "left@example.org"]


def test_due_pages_cover_the_list_once_in_order(engine: Engine) -> None:
    _population(engine)
    settings = settings_from_mapping({}, base_dir=Path("."))
    with Session(engine) as session:
        whole, _ = plan.due_digests(session, settings, None, DAY0, force=True)
        pages = list(plan.due_pages(session, settings, DAY0, force=True))
    assert len(whole) == 7
    assert all(0 < len(p) <= 2 for p in pages)
    assert [d for p in pages for d in p] == whole


def test_a_paged_plan_sends_each_digest_exactly_once(
    engine: Engine, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    mailed, not_mailed = _population(engine)
    settings = _settings(smtp_server, tmp_path)
    clock = ManualClock(DAY0)
    first = _send(engine, settings, clock)
    assert (first.created, first.sent, first.skipped, first.failed) == (7, 7, 0, 0)
    assert smtp_server.per_recipient() == Counter(dict.fromkeys(mailed, 1))
    assert not any(smtp_server.received_by(e) for e in not_mailed)
    rows = digests(engine)
    assert len(rows) == 7 and {r.status for r in rows} == {"sent"}
    assert len({(r.subscriber_id, r.period) for r in rows}) == 7
    # Planning again finds every page already planned and sent.
    again = _send(engine, settings, clock)
    assert (again.created, again.sent) == (0, 0)
    assert smtp_server.per_recipient() == Counter(dict.fromkeys(mailed, 1))


def test_a_paged_dry_run_lists_everyone_once(
    engine: Engine, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    mailed, _ = _population(engine)
    summary = _send(engine, _settings(smtp_server, tmp_path), ManualClock(DAY0), dry_run=True)
    assert [p.recipient for p in summary.planned] == mailed
    assert smtp_server.per_recipient() == Counter()
