"""Subscribing with double opt-in through Flask's test client, with the preview outbox.

The path a stranger takes: the form, the confirmation email in the outbox, the confirm
page and its button, then the YAML file under ``subscribers/self-service/`` that the
CLI checks and lists and the next preview includes.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from newsletter.config import settings_from_mapping
from newsletter.db import session_scope
from newsletter.errors import ConfigError
from newsletter.models import RateHit
from newsletter.pipeline.preview import run_preview
from newsletter.tokens import make_confirm_token
from newsletter.web import create_app
from tests.support.selfservice import (
    FORM,
    LIST_ID,
    SECRET,
    World,
    confirm_link,
    make_world,
)
from tests.support.subscribers import Seed, add_entries, write_profile


@pytest.fixture
def world(tmp_path: Path, db_url: str, engine: Engine) -> World:
    w = make_world(tmp_path, db_url, engine)
    w.cli("subscribers", "sync")
    return w


def test_subscribe_confirm_writes_profile_and_next_preview_includes_it(world: World) -> None:
    page = world.client.get("/subscribe")
    assert page.status_code == 200
    assert 'name="keywords"' in page.text and 'name="website"' in page.text

    r = world.client.post("/subscribe", data=FORM)
    assert r.status_code == 200 and 'id="sent"' in r.text
    # Nothing exists before the click.
    assert not world.self_service.exists()
    assert "grace@example.org" not in world.cli("subscribers", "list")

    mail = world.mail_to("grace@example.org")
    assert "Confirm your subscription" in mail["Subject"]
    link = confirm_link(mail)

    # A GET (a link scanner) only shows the button.
    for _ in range(2):
        g = world.client.get(link)
        assert g.status_code == 200 and 'id="confirm"' in g.text
    assert not world.self_service.exists()

    done = world.client.post(link)
    assert done.status_code == 200 and 'id="confirmed"' in done.text
    files = list(world.self_service.glob("*.yaml"))
    assert [f.name for f in files] == ["grace_at_example.org.yaml"]
    text = files[0].read_text(encoding="utf-8")
    assert "email: grace@example.org" in text
    assert "- diffusion model" in text and "field: title" in text and "exact: true" in text
    assert "weight: 2" in text and "timezone: Europe/Berlin" in text

    assert "1 valid profiles, 0 problems" in world.cli("subscribers", "check", str(files[0]))
    assert "2 valid profiles, 0 problems" in world.cli("subscribers", "check")
    assert "grace@example.org" in world.cli("subscribers", "list")

    # The preferences link of the confirmed page works.
    prefs = re.search(r'href="(/preferences/[^"]+)"', done.text)
    assert prefs and world.client.get(prefs.group(1)).status_code == 200

    # Confirming again (a second click) writes nothing new and still answers.
    before = files[0].read_bytes()
    again = world.client.post(link)
    assert again.status_code == 200
    assert files[0].read_bytes() == before

    now = datetime.now(UTC)
    add_entries(
        world.engine,
        [Seed(title="A diffusion model for weather", first_seen=now - timedelta(hours=2))],
    )
    result = run_preview(world.engine, world.settings, now=now, out_dir=world.root / "pv")
    assert "grace@example.org" in {row.email for row in result.rows if row.html_href}


def test_same_answer_for_known_address_and_no_second_profile(world: World) -> None:
    new = world.client.post("/subscribe", data=FORM)
    known = world.client.post("/subscribe", data={**FORM, "email": "ops@example.org", "name": ""})
    assert new.status_code == known.status_code == 200
    assert new.text.replace("Grace", "") == known.text.replace("Grace", "")
    mail = world.mail_to("ops@example.org")
    assert "already subscribed" in mail["Subject"]
    assert "/preferences/" in str(mail.get_payload())
    assert "/subscribe/confirm/" not in str(mail.get_payload())
    assert not world.self_service.exists()


def test_confirming_an_address_that_meanwhile_exists_writes_no_duplicate(world: World) -> None:
    world.client.post("/subscribe", data={**FORM, "email": "late@example.org"})
    link = confirm_link(world.mail_to("late@example.org"))
    write_profile(world.subscribers, "late.yaml", "email: late@example.org\nkeywords: [x ray]\n")
    world.cli("subscribers", "sync")
    r = world.client.post(link)
    assert r.status_code == 200
    assert not world.self_service.exists()


def test_tampered_and_expired_links_are_refused(world: World) -> None:
    world.client.post("/subscribe", data=FORM)
    link = confirm_link(world.mail_to("grace@example.org"))
    token = link.rsplit("/", 1)[1]
    flipped = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
    for bad in (flipped, token[:-5], "x" * 40):
        assert world.client.get(f"/subscribe/confirm/{bad}").status_code == 400
        assert world.client.post(f"/subscribe/confirm/{bad}").status_code == 400
    expired = make_confirm_token(
        SECRET,
        list_id=LIST_ID,
        payload={"email": "old@example.org", "keywords": ["diffusion model"]},
        expires_at=int(time.time()) - 1,
    )
    r = world.client.post(f"/subscribe/confirm/{expired}")
    assert r.status_code == 400 and "expired" in r.text
    other_list = make_confirm_token(
        SECRET,
        list_id="other.list",
        payload={"email": "x@example.org", "keywords": ["diffusion model"]},
        expires_at=int(time.time()) + 3600,
    )
    assert world.client.post(f"/subscribe/confirm/{other_list}").status_code == 400
    assert not world.self_service.exists()


def test_invalid_fields_show_the_validators_messages(world: World) -> None:
    r = world.client.post(
        "/subscribe",
        data={
            **FORM,
            "email": "not-an-address",
            "keywords": "the of\n",
            "timezone": "europe/berlin",
        },
    )
    assert r.status_code == 400
    # The same words `subscribers check` prints for the same mistakes.
    assert "expected an address like name@example.org" in r.text
    assert "has only stop words" in r.text
    assert (
        "unknown timezone &#39;europe/berlin&#39; (did you mean &#39;Europe/Berlin&#39;?)" in r.text
    )
    assert 'id="email-error"' in r.text and 'id="keywords-error"' in r.text
    # What the reader typed is kept.
    assert "the of" in r.text
    empty = world.client.post("/subscribe", data={**FORM, "keywords": ""})
    assert "required: a list of at least one keyword" in empty.text
    assert world.mails() == []


def test_honeypot_gets_the_same_page_and_no_mail(world: World) -> None:
    r = world.client.post("/subscribe", data={**FORM, "website": "http://spam.example"})
    assert r.status_code == 200 and 'id="sent"' in r.text
    assert world.mails() == []


def test_rate_limits_per_address_and_per_client(
    tmp_path: Path, db_url: str, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    w = make_world(tmp_path, db_url, engine, "per_address_per_hour = 2\nper_client_per_hour = 4\n")
    sent = w.settings.newsletter.outbox_dir / "sent"
    stamps = []
    caplog.set_level("INFO", logger="newsletter.web.subscribe")
    for _ in range(3):
        r = w.client.post("/subscribe", data=FORM)
        assert r.status_code == 200 and 'id="sent"' in r.text  # same answer every time
        stamps.append([m["Message-ID"] for m in w.mails()])
    # The outbox keeps one file per address: a new mail shows as a new Message-ID.
    assert stamps[0] != stamps[1] and stamps[1] == stamps[2]
    assert [r.message for r in caplog.records].count(
        "subscribe: per-address rate limit reached"
    ) == 1
    assert len(list(sent.rglob("*.eml"))) == 1
    r = w.client.post("/subscribe", data={**FORM, "email": "other@example.org"})
    assert r.status_code == 200
    blocked = w.client.post("/subscribe", data={**FORM, "email": "third@example.org"})
    assert blocked.status_code == 429
    other = w.client.post(
        "/subscribe",
        data={**FORM, "email": "fourth@example.org"},
        environ_base={"REMOTE_ADDR": "10.0.0.9"},
    )
    assert other.status_code == 200
    assert {m["To"] for m in w.mails()} == {
        "grace@example.org",
        "other@example.org",
        "fourth@example.org",
    }


def test_rate_limits_hold_across_processes_and_restarts(
    tmp_path: Path, db_url: str, engine: Engine
) -> None:
    """Counted in the database: a second web process, or the same one restarted, sees the
    hits of the first; the table holds no address or client in clear."""
    w = make_world(tmp_path, db_url, engine, "per_address_per_hour = 1\nper_client_per_hour = 3\n")
    assert w.client.post("/subscribe", data=FORM).status_code == 200
    assert len(w.mails()) == 1
    restarted = create_app(w.settings, engine, testing=True, secret=SECRET).test_client()
    assert restarted.post("/subscribe", data=FORM).status_code == 200  # same page ...
    assert len(w.mails()) == 1  # ... but no second mail to the address
    other = create_app(w.settings, engine, testing=True, secret=SECRET).test_client()
    assert other.post("/subscribe", data={**FORM, "email": "x@example.org"}).status_code == 200
    assert other.post("/subscribe", data={**FORM, "email": "y@example.org"}).status_code == 429
    with session_scope(engine) as s:
        keys = {(scope, key) for scope, key in s.execute(select(RateHit.scope, RateHit.key))}
    assert {scope for scope, _ in keys} == {"client", "address"}
    assert not any("example.org" in key or "127.0.0.1" in key for _, key in keys)


def test_operator_can_close_or_restrict_subscribing(
    tmp_path: Path, db_url: str, engine: Engine
) -> None:
    closed = make_world(tmp_path / "a", db_url, engine, "enabled = false\n")
    assert closed.client.get("/subscribe").status_code == 403
    assert closed.client.post("/subscribe", data=FORM).status_code == 403
    assert closed.mails() == []

    only = make_world(tmp_path / "b", db_url, engine, 'allowed_domains = "uni.example"\n')
    r = only.client.post("/subscribe", data=FORM)
    assert r.status_code == 400 and "only takes addresses at uni.example" in r.text
    ok = only.client.post("/subscribe", data={**FORM, "email": "g@cs.uni.example"})
    assert ok.status_code == 200
    assert [m["To"] for m in only.mails()] == ["g@cs.uni.example"]


def test_folder_must_stay_inside_subscribers_dir() -> None:
    for bad in ("../elsewhere", "/abs", ".hidden", ""):
        with pytest.raises(ConfigError):
            settings_from_mapping({"subscribe": {"folder": bad}}, env={})
