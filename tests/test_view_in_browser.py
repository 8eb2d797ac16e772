"""View in browser: a send keeps each digest, the email links to it, /d/<token> shows it
until keep_digests_days have passed (then 410), and the preferences page lists them."""

from __future__ import annotations

import re
import zlib
from datetime import UTC, datetime, timedelta
from email.message import Message
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from newsletter.config import settings_from_mapping
from newsletter.db import session_scope
from newsletter.db.copies import decompress_copy
from newsletter.delivery import PreviewSender
from newsletter.errors import ConfigError
from newsletter.models import DigestCopy, Subscriber
from newsletter.pipeline.send import SendOptions, send_due
from newsletter.tokens import make_digest_token
from tests.support.selfservice import LIST_ID, SECRET, World, make_world, subscribe_and_confirm
from tests.support.subscribers import Seed, add_entries

TITLE = "A diffusion model for weather"


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", SECRET.decode())  # the app's key


def _world(tmp_path: Path, db_url: str, engine: Engine, keep: str = "") -> World:
    extra = f"\n[web]\nkeep_digests_days = {keep}\n" if keep else ""
    w = make_world(tmp_path, db_url, engine, extra=extra)
    w.cli("subscribers", "sync")
    return w


def _send(world: World, now: datetime) -> None:
    with PreviewSender(world.settings.newsletter.outbox_dir) as sender:
        summary = send_due(
            world.engine,
            world.settings,
            sender,
            options=SendOptions(force=True),
            now=lambda: now,
            sleep=lambda _s: None,
        )
    assert summary.ok


def _digest_to(world: World, address: str) -> Message:
    found = [
        m for m in world.mails() if m["To"] and address in m["To"] and "Confirm" not in m["Subject"]
    ]
    assert len(found) == 1, [m["Subject"] for m in world.mails()]
    return found[0]


def _parts(msg: Message) -> tuple[str, str]:
    text = html = ""
    for part in msg.walk():
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            if part.get_content_type() == "text/plain":
                text = payload.decode()
            elif part.get_content_type() == "text/html":
                html = payload.decode()
    return text, html


def _copies(engine: Engine) -> int:
    with session_scope(engine) as s:
        return int(s.scalar(select(func.count()).select_from(DigestCopy)) or 0)


def test_a_sent_digest_is_kept_linked_listed_and_then_gone(
    tmp_path: Path, db_url: str, engine: Engine
) -> None:
    world = _world(tmp_path, db_url, engine)
    prefs = subscribe_and_confirm(world)
    now = datetime.now(UTC)
    add_entries(engine, [Seed(title=TITLE, first_seen=now - timedelta(hours=1))])
    _send(world, now)
    text, html = _parts(_digest_to(world, "grace@example.org"))
    m = re.search(r"View in browser: http://digest\.test(/d/[A-Za-z0-9_-]+)\s", text)
    assert m, text
    path = m.group(1)
    assert f'href="http://digest.test{path}"' in html
    assert _copies(engine) == 1

    page = world.client.get(path)
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert TITLE in page.text and "More like this" in page.text
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp

    # Copies are kept zstd-compressed; one an earlier version kept with zlib still opens.
    with session_scope(engine) as s:
        row = s.scalars(select(DigestCopy)).one()
        assert row.message.startswith(b"\x28\xb5\x2f\xfd")
        row.message = zlib.compress(decompress_copy(row.message))
    again = world.client.get(path)
    assert again.status_code == 200 and again.text == page.text

    listed = world.client.get(prefs)
    assert listed.status_code == 200 and 'id="digests"' in listed.text
    assert f'href="{path}"' in listed.text

    # A tampered link, and one of another subscriber row (a rebuilt database), are refused.
    assert world.client.get(path[:-2] + ("AA" if path[-2:] != "AA" else "BB")).status_code == 400
    with session_scope(engine) as s:
        sid = s.scalar(select(Subscriber.id).where(Subscriber.email == "grace@example.org"))
        digest_id = s.scalar(select(DigestCopy.digest_id))
    assert sid is not None and digest_id is not None
    other = make_digest_token(
        SECRET, subscriber_id=sid, list_id=LIST_ID, version=1, salt="0" * 32, digest_id=digest_id
    )
    assert world.client.get(f"/d/{other}").status_code == 400

    # A later send prunes what is past keep_digests_days (30 by default): the link says so.
    _send(world, now + timedelta(days=31))
    assert _copies(engine) == 0
    gone = world.client.get(path)
    assert gone.status_code == 410 and "no longer kept" in gone.text and "30 days" in gone.text
    assert 'id="digests"' not in world.client.get(prefs).text


def test_keep_digests_days_0_keeps_nothing_and_links_nothing(
    tmp_path: Path, db_url: str, engine: Engine
) -> None:
    world = _world(tmp_path, db_url, engine, keep="0")
    subscribe_and_confirm(world)
    now = datetime.now(UTC)
    add_entries(engine, [Seed(title=TITLE, first_seen=now - timedelta(hours=1))])
    _send(world, now)
    text, html = _parts(_digest_to(world, "grace@example.org"))
    assert TITLE in text and "View in browser" not in text and "View in browser" not in html
    assert _copies(engine) == 0


@pytest.mark.parametrize("value", [-1, 3651, "30", True])
def test_keep_digests_days_is_validated_by_name(value: object) -> None:
    with pytest.raises(ConfigError) as e:
        settings_from_mapping({"web": {"keep_digests_days": value}})
    assert "web.keep_digests_days" in str(e.value)
