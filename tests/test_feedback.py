"""More/Fewer like this: GET asks, POST changes the YAML as shown, Undo restores bytes."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import Engine, func, select

from newsletter.db import session_scope
from newsletter.models import ProfileChange, Subscriber
from newsletter.pipeline.preview import run_preview
from newsletter.profiles import read_profiles
from newsletter.profiles.tuning import distinctive_phrase, tune
from newsletter.tokens import FeedbackDirection, make_feedback_token, make_token
from tests.support.selfservice import LIST_ID, SECRET, World, make_world, subscribe_and_confirm
from tests.support.subscribers import Seed, add_entries


@pytest.fixture
def world(tmp_path: Path, db_url: str, engine: Engine) -> World:
    w = make_world(tmp_path, db_url, engine)
    w.cli("subscribers", "sync")
    return w


def grace(world: World) -> tuple[int, Path]:
    subscribe_and_confirm(world)
    with session_scope(world.engine) as s:
        sid = s.scalar(select(Subscriber.id).where(Subscriber.email == "grace@example.org"))
    assert sid is not None
    return sid, world.self_service / "grace_at_example.org.yaml"


def entry(world: World, title: str) -> int:
    now = datetime.now(UTC)
    return add_entries(world.engine, [Seed(title=title, first_seen=now - timedelta(hours=1))])[0]


def salt(world: World, sid: int) -> str:
    with session_scope(world.engine) as s:
        value = s.scalar(select(Subscriber.token_salt).where(Subscriber.id == sid))
    assert value
    return str(value)


def link(world: World, sid: int, entry_id: int, direction: FeedbackDirection) -> str:
    token = make_feedback_token(
        SECRET, subscriber_id=sid, list_id=LIST_ID, version=1, salt=salt(world, sid),
        entry_id=entry_id, direction=direction,
    )  # fmt: skip
    return f"/feedback/{token}"


def changes(world: World) -> int:
    with session_scope(world.engine) as s:
        return int(s.scalar(select(func.count()).select_from(ProfileChange)) or 0)


def shown_diff(page: str) -> list[str]:
    m = re.search(r'<pre id="diff">(.*?)</pre>', page, re.S)
    assert m, page
    return [
        html.unescape(x) for x in re.findall(r'<span class="(?:del|ins)">(.*?)</span>', m.group(1))
    ]


def test_get_asks_and_changes_nothing(world: World) -> None:
    sid, path = grace(world)
    before = path.read_bytes()
    url = link(world, sid, entry(world, "A diffusion model for weather"), "more")
    for _ in range(3):
        r = world.client.get(url)
        assert r.status_code == 200 and 'id="apply"' in r.text
        assert "A diffusion model for weather" in r.text
    assert path.read_bytes() == before and changes(world) == 0


def test_more_raises_matched_weight_as_shown_and_undo_restores_bytes(world: World) -> None:
    sid, path = grace(world)
    before = path.read_bytes()
    r = world.client.post(link(world, sid, entry(world, "A diffusion model for weather"), "more"))
    assert r.status_code == 200
    assert "&#39;diffusion model&#39; now weighs 2" in r.text
    after = path.read_text(encoding="utf-8")
    data = yaml.safe_load(after)
    assert {"term": "diffusion model", "weight": 2} in data["keywords"]
    assert read_profiles(world.subscribers).ok
    # The page shows exactly the lines that differ between the two files.
    assert shown_diff(r.text) == [
        "- - diffusion model",
        "+ - term: diffusion model",
        "+   weight: 2",
    ]
    assert (
        before.decode().replace("- diffusion model\n", "- term: diffusion model\n  weight: 2\n")
        == after
    )
    with session_scope(world.engine) as s:
        sub = s.get(Subscriber, sid)
        assert sub is not None
        assert {"term": "diffusion model", "weight": 2.0, "exact": False, "field": None} in [
            {k: v for k, v in kw.items() if k in ("term", "weight", "exact", "field")}
            for kw in sub.profile["keywords"]
        ]
    undo = re.search(r'<form method="post" action="(/feedback/undo/[^"]+)">', r.text)
    assert undo
    u = world.client.post(undo.group(1))
    assert u.status_code == 200 and 'id="undone"' in u.text
    assert path.read_bytes() == before
    again = world.client.post(undo.group(1))
    assert again.status_code == 200 and "Already undone" in again.text
    assert path.read_bytes() == before


def test_more_without_a_matched_keyword_adds_a_phrase(world: World) -> None:
    sid, path = grace(world)
    r = world.client.post(
        link(world, sid, entry(world, "Sparse attention for long documents"), "more")
    )
    assert "added the keyword &#39;Sparse attention&#39;" in r.text
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert data["keywords"][-1] == "Sparse attention"
    assert read_profiles(world.subscribers).ok


def test_fewer_adds_an_exclude_and_a_history_is_kept(world: World) -> None:
    sid, path = grace(world)
    first = world.client.post(
        link(world, sid, entry(world, "A diffusion model for weather"), "fewer")
    )
    assert first.status_code == 200
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    # "diffusion model" matched at weight 1: the title's longest word not yet in the
    # profile becomes an exclude (the two-word phrase is already a keyword).
    assert data["exclude"] == ["diffusion"]
    assert "no longer sent" in first.text
    second = world.client.post(link(world, sid, entry(world, "Retrieval for code search"), "fewer"))
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    # retrieval weighs 2: fewer lowers it to 1, the plain form again.
    assert "retrieval" in data["keywords"]
    assert 'id="history"' in second.text and changes(world) == 2
    assert read_profiles(world.subscribers).ok


def test_undo_is_refused_when_the_file_changed_since(world: World) -> None:
    sid, path = grace(world)
    r = world.client.post(link(world, sid, entry(world, "A diffusion model for weather"), "more"))
    undo = re.search(r'action="(/feedback/undo/[^"]+)"', r.text)
    assert undo
    world.client.post(link(world, sid, entry(world, "Dense retrieval at scale"), "more"))
    later = path.read_bytes()
    assert world.client.post(undo.group(1)).status_code == 409
    assert path.read_bytes() == later


def test_bad_links_and_operator_files(world: World) -> None:
    sid, _ = grace(world)
    eid = entry(world, "A diffusion model for weather")
    url = link(world, sid, eid, "more")
    tampered = url[:-2] + ("AA" if url[-2:] != "AA" else "BB")
    assert world.client.post(tampered).status_code == 400
    with session_scope(world.engine) as s:
        row = s.execute(
            select(Subscriber.id, Subscriber.token_salt).where(
                Subscriber.email == "ops@example.org"
            )
        ).one()
    ops, ops_salt = row
    ops_file = world.subscribers / "ops.yaml"
    before = ops_file.read_bytes()
    assert world.client.post(link(world, ops, eid, "more")).status_code == 403
    assert ops_file.read_bytes() == before
    # Another subscriber's link token cannot undo Grace's change.
    r = world.client.post(url)
    m = re.search(r"/feedback/undo/[^/]+/(\d+)", r.text)
    assert m
    ops_token = make_token(SECRET, subscriber_id=ops, list_id=LIST_ID, version=1, salt=ops_salt)
    assert world.client.post(f"/feedback/undo/{ops_token}/{m.group(1)}").status_code in (400, 403)


def test_feedback_link_of_a_rebuilt_database_is_refused(world: World) -> None:
    """Same secret, same id, but a new row (a new salt): the old card's link is dead."""
    sid, path = grace(world)
    url = link(world, sid, entry(world, "A diffusion model for weather"), "more")
    with session_scope(world.engine) as s:
        sub = s.get(Subscriber, sid)
        assert sub is not None
        sub.token_salt = "0" * 32  # what a rebuilt database gives subscriber `sid`
    before = path.read_bytes()
    assert world.client.get(url).status_code == 400
    assert world.client.post(url).status_code == 400
    assert path.read_bytes() == before and changes(world) == 0


def test_a_cards_links_in_a_previewed_digest_open_and_apply(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The composed email carries the links: text and HTML name the same ones, they open
    the asking page, and the POST changes the file."""
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", SECRET.decode())  # the app's key
    sid, path = grace(world)
    eid = entry(world, "A diffusion model for weather")
    out = world.root / "pv"
    run_preview(world.engine, world.settings, now=datetime.now(UTC), out_dir=out)
    [txt] = out.rglob("grace@example.org.txt")
    [htm] = out.rglob("grace@example.org.html")
    text, markup = txt.read_text(encoding="utf-8"), htm.read_text(encoding="utf-8")
    more = re.findall(r"More like this: http://digest\.test(/feedback/\S+)", text)
    fewer = re.findall(r"Fewer like this: http://digest\.test(/feedback/\S+)", text)
    assert len(more) == len(fewer) == 1
    assert f'href="http://digest.test{more[0]}"' in markup
    assert f'href="http://digest.test{fewer[0]}"' in markup
    assert more[0] != fewer[0] and more[0] == link(world, sid, eid, "more")
    before = path.read_bytes()
    assert world.client.get(more[0]).status_code == 200 and path.read_bytes() == before
    assert world.client.post(fewer[0]).status_code == 200 and path.read_bytes() != before


def test_a_click_syncs_only_the_file_it_changed(world: World) -> None:
    """The operator's pending edit of another file is not picked up by a reader's click
    (a click re-reads one file, not the whole folder); ``subscribers sync`` still does."""
    sid, _ = grace(world)
    ops = world.subscribers / "ops.yaml"
    ops.write_text("email: ops@example.org\nkeywords: [graph neural network, lidar]\n")

    def ops_terms() -> list[str]:
        with session_scope(world.engine) as s:
            sub = s.scalar(select(Subscriber).where(Subscriber.email == "ops@example.org"))
            assert sub is not None
            return [k["term"] for k in sub.profile["keywords"]]

    r = world.client.post(link(world, sid, entry(world, "A diffusion model for weather"), "more"))
    assert r.status_code == 200
    with session_scope(world.engine) as s:
        grace_sub = s.get(Subscriber, sid)
        assert grace_sub is not None
        weights = {k["term"]: k["weight"] for k in grace_sub.profile["keywords"]}
    assert weights["diffusion model"] == 2  # her file was synced at once
    assert ops_terms() == ["graph neural network"]  # the other file was not read
    world.cli("subscribers", "sync")
    assert ops_terms() == ["graph neural network", "lidar"]


def test_tune_rules() -> None:
    profile = {"email": "a@example.org", "keywords": ["graph", {"term": "x ray", "weight": 3}]}
    more, said = tune(profile, direction="more", matched=["graph"], title="Graph nets")
    assert more["keywords"][0] == {"term": "graph", "weight": 2} and "weighs 2" in said
    fewer, _ = tune(profile, direction="fewer", matched=["x ray"], title="X ray imaging")
    assert fewer["keywords"][1] == {"term": "x ray", "weight": 2}
    assert profile["keywords"][0] == "graph"  # the input is not modified
    assert distinctive_phrase("The art of the graph", ["graph"]) == "art"
    assert distinctive_phrase("On the of") is None
