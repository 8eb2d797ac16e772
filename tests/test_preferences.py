"""Editable preferences: the seven-day preview, saving to the YAML file, the refusals."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import Engine, select

from newsletter.db import session_scope
from newsletter.models import Subscriber
from newsletter.pipeline.preview import run_preview
from newsletter.profiles import read_profiles
from newsletter.tokens import make_token
from tests.support.selfservice import LIST_ID, SECRET, World, make_world, subscribe_and_confirm
from tests.support.subscribers import Seed, add_entries

EDIT = {
    "name": "Grace",
    "keywords": "protein folding\nretrieval ^2",
    "exclude": "survey",
    "frequency": "weekly",
    "weekday": "friday",
    "send_time": "09:30",
    "timezone": "Europe/Berlin",
    "max_items": "4",
}


@pytest.fixture
def world(tmp_path: Path, db_url: str, engine: Engine) -> World:
    w = make_world(tmp_path, db_url, engine)
    w.cli("subscribers", "sync")
    now = datetime.now(UTC)
    add_entries(
        engine,
        [
            Seed(title="A diffusion model for weather", first_seen=now - timedelta(days=1)),
            Seed(title="Protein folding at scale", first_seen=now - timedelta(days=2)),
            Seed(title="Dense retrieval revisited", first_seen=now - timedelta(days=3)),
            Seed(title="Protein folding, a survey", first_seen=now - timedelta(days=3)),
            Seed(title="Protein folding long ago", first_seen=now - timedelta(days=9)),
        ],
    )
    return w


def profile_file(world: World) -> Path:
    return world.self_service / "grace_at_example.org.yaml"


def test_page_is_a_prefilled_form(world: World) -> None:
    prefs = subscribe_and_confirm(world)
    page = world.client.get(prefs)
    assert page.status_code == 200
    assert 'action="/preferences/' in page.text and 'id="save"' in page.text
    assert "diffusion model\ntitle: protein folding\n&#34;BERT&#34;\nretrieval ^2" in page.text
    assert 'value="08:15"' in page.text and 'value="Europe/Berlin"' in page.text


def test_preview_lists_the_last_seven_days_and_changes_nothing(world: World) -> None:
    prefs = subscribe_and_confirm(world)
    before = profile_file(world).read_bytes()
    r = world.client.post(prefs, data={**EDIT, "action": "preview"})
    assert r.status_code == 200
    assert "You would have got 2 papers in the last 7 days" in r.text
    assert "Protein folding at scale" in r.text and "Dense retrieval revisited" in r.text
    assert "a survey" not in r.text  # excluded
    assert "long ago" not in r.text  # older than seven days
    assert "diffusion model for weather" not in r.text  # no longer a keyword
    assert profile_file(world).read_bytes() == before


def test_save_rewrites_the_file_syncs_and_changes_the_next_digest(world: World) -> None:
    prefs = subscribe_and_confirm(world)
    now = datetime.now(UTC)
    add_entries(
        world.engine,
        [Seed(title="Quantum error correction codes", first_seen=now - timedelta(hours=1))],
        feed="second",
    )
    # Before the edit the next digest has nothing for her: no keyword matches.
    first = run_preview(
        world.engine, world.settings, now=now, out_dir=world.root / "pv1",
        emails=["grace@example.org"],
    )  # fmt: skip
    assert [r.n_entries for r in first.rows if r.html_href] == []

    r = world.client.post(prefs, data={**EDIT, "keywords": "quantum error correction"})
    assert r.status_code == 200  # the preview step: nothing saved yet
    r = world.client.post(
        prefs, data={**EDIT, "keywords": "quantum error correction", "action": "save"}
    )
    assert r.status_code == 200 and 'id="saved"' in r.text
    data = yaml.safe_load(profile_file(world).read_text(encoding="utf-8"))
    assert data["keywords"] == ["quantum error correction"]
    assert data["frequency"] == "weekly" and data["weekday"] == "friday"
    assert data["max_items"] == 4 and data["exclude"] == ["survey"]
    assert read_profiles(world.subscribers).ok
    with session_scope(world.engine) as s:
        sub = s.scalar(select(Subscriber).where(Subscriber.email == "grace@example.org"))
        assert sub is not None and sub.frequency == "weekly"
        assert [k["term"] for k in sub.profile["keywords"]] == ["quantum error correction"]
    after = run_preview(
        world.engine, world.settings, now=now, out_dir=world.root / "pv2",
        emails=["grace@example.org"],
    )  # fmt: skip
    assert [r.n_entries for r in after.rows if r.html_href] == [1]


def test_invalid_edit_shows_messages_and_keeps_the_file(world: World) -> None:
    prefs = subscribe_and_confirm(world)
    before = profile_file(world).read_bytes()
    r = world.client.post(
        prefs, data={**EDIT, "keywords": "the\n", "send_time": "25:00", "action": "save"}
    )
    assert r.status_code == 400
    assert "has only stop words" in r.text
    assert "expected a time like &#34;07:30&#34;, got &#39;25:00&#39;" in r.text
    assert profile_file(world).read_bytes() == before


def test_an_operator_file_is_read_only(world: World) -> None:
    with session_scope(world.engine) as s:
        sub = s.scalar(select(Subscriber).where(Subscriber.email == "ops@example.org"))
        assert sub is not None
        token = make_token(
            SECRET, subscriber_id=sub.id, list_id=LIST_ID, version=1, salt=sub.token_salt
        )
    ops = world.subscribers / "ops.yaml"
    before = ops.read_bytes()
    page = world.client.get(f"/preferences/{token}")
    assert page.status_code == 200 and 'id="save"' not in page.text
    assert "graph neural network" in page.text
    r = world.client.post(f"/preferences/{token}", data={**EDIT, "action": "save"})
    assert r.status_code == 403
    assert ops.read_bytes() == before


def test_concurrent_saves_leave_one_whole_version(world: World) -> None:
    prefs = subscribe_and_confirm(world)
    variants = [f"topic number {i}\nprotein folding" for i in range(6)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(variants))

    def save(keywords: str) -> None:
        try:
            client = world.app.test_client()
            start.wait()
            r = client.post(prefs, data={**EDIT, "keywords": keywords, "action": "save"})
            assert r.status_code == 200, r.text
        except BaseException as e:  # reported below, in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=save, args=(v,)) for v in variants]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    loaded = read_profiles(world.subscribers)
    assert loaded.ok, loaded.problems
    data = yaml.safe_load(profile_file(world).read_text(encoding="utf-8"))
    assert "\n".join(data["keywords"]) in variants
    assert not [p for p in world.self_service.iterdir() if p.name.startswith(".")]
