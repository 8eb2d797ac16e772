"""Syncing profiles into the database, and the candidate window, on every backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from newsletter.db import session_scope
from newsletter.db.candidates import candidate_windows, load_candidates
from newsletter.db.subscriber_reads import (
    active_subscriber_ids,
    is_suppressed,
    list_subscribers,
    load_profiles,
    subscriber_id,
    token_versions,
)
from newsletter.db.subscribers import SyncResult
from newsletter.errors import ProfileError
from newsletter.models import Suppression
from newsletter.pipeline.sync import sync_directory
from newsletter.profiles import LoadResult
from tests.support.subscribers import (
    Seed,
    add_digest,
    add_entries,
    count_statements,
    profile_yaml,
    subscriber_rows,
    suppress,
    write_profile,
)

NOW = datetime(2026, 1, 9, 6, 0, tzinfo=UTC)
ADA = """\
email: ada@example.org
name: Ada Lovelace
keywords:
  - bilevel optimization
  - {term: RLHF, weight: 2, field: title}
exclude: [survey]
max_items: 10
frequency: weekly
weekday: friday
send_time: "07:30"
timezone: Europe/Berlin
"""
TEAM = (
    profile_yaml("bob@example.org", "diffusion")
    + "---\n"
    + profile_yaml("cy@example.org", "agents", active="false")
)


def sync(engine: Engine, directory: Path, now: datetime = NOW) -> tuple[LoadResult, SyncResult]:
    with session_scope(engine) as session:
        return sync_directory(session, directory, now=now)


@pytest.fixture
def subs(tmp_path: Path) -> Path:
    directory = tmp_path / "subscribers"
    write_profile(directory, "ada.yaml", ADA)
    write_profile(directory, "team/list.yaml", TEAM)
    return directory


def test_sync_creates_subscribers_that_load_back_as_the_same_profiles(
    engine: Engine, subs: Path
) -> None:
    loaded, result = sync(engine, subs)
    assert loaded.ok
    assert result.created == ("ada@example.org", "bob@example.org", "cy@example.org")
    rows = subscriber_rows(engine)
    ada = rows["ada@example.org"]
    assert (ada["name"], ada["frequency"], ada["weekday"], ada["send_time"], ada["timezone"]) == (
        "Ada Lovelace",
        "weekly",
        4,
        "07:30",
        "Europe/Berlin",
    )
    assert (ada["max_items"], ada["active"], ada["source_file"], ada["deleted_at"]) == (
        10,
        True,
        "ada.yaml",
        None,
    )
    assert rows["cy@example.org"]["active"] is False
    assert rows["bob@example.org"]["source_file"] == "team/list.yaml"
    with session_scope(engine) as session:
        ids = {p.email: subscriber_id(session, p.email) for p in loaded.profiles}
        back = load_profiles(session, [i for i in ids.values() if i is not None])
        assert token_versions(session, list(back)) == dict.fromkeys(back, 1)
    expected = {p.email: p for p in loaded.profiles}
    for profile in back.values():
        from dataclasses import replace

        assert profile == replace(expected[profile.email], line=None)


def test_second_sync_changes_nothing(engine: Engine, subs: Path) -> None:
    sync(engine, subs)
    before = subscriber_rows(engine)
    _, again = sync(engine, subs, NOW + timedelta(hours=1))
    assert (again.created, again.updated, again.deactivated, again.unchanged) == ((), (), (), 3)
    assert subscriber_rows(engine) == before


def test_an_edited_profile_is_updated_and_only_it(engine: Engine, subs: Path) -> None:
    sync(engine, subs)
    before = subscriber_rows(engine)
    write_profile(subs, "ada.yaml", ADA.replace("max_items: 10", "max_items: 5"))
    _, result = sync(engine, subs, NOW + timedelta(hours=1))
    assert (result.updated, result.unchanged) == (("ada@example.org",), 2)
    after = subscriber_rows(engine)
    assert after["ada@example.org"]["max_items"] == 5
    assert after["ada@example.org"]["updated_at"] == NOW + timedelta(hours=1)
    assert after["bob@example.org"] == before["bob@example.org"]


def test_a_deleted_file_deactivates_its_subscriber_and_keeps_the_row(
    engine: Engine, subs: Path
) -> None:
    sync(engine, subs)
    ada_id = subscriber_rows(engine)["ada@example.org"]["id"]
    add_digest(engine, ada_id, status="sent", window_start=NOW - timedelta(days=1), window_end=NOW)
    (subs / "ada.yaml").unlink()
    later = NOW + timedelta(days=1)
    _, result = sync(engine, subs, later)
    assert result.deactivated == ("ada@example.org",)
    ada = subscriber_rows(engine)["ada@example.org"]
    assert (ada["id"], ada["active"], ada["deleted_at"]) == (ada_id, False, later)
    with session_scope(engine) as session:
        assert ada_id not in active_subscriber_ids(session)
        statuses = {s.email: s.status for s in list_subscribers(session, include_deleted=True)}
        assert statuses == {
            "ada@example.org": "deleted",
            "bob@example.org": "active",
            "cy@example.org": "inactive",
        }
    # Deactivating again does nothing; the file coming back brings the subscriber back.
    _, again = sync(engine, subs, later + timedelta(hours=1))
    assert again.deactivated == ()
    assert subscriber_rows(engine)["ada@example.org"]["deleted_at"] == later
    write_profile(subs, "ada.yaml", ADA)
    _, back = sync(engine, subs, later + timedelta(days=1))
    assert back.updated == ("ada@example.org",)
    ada = subscriber_rows(engine)["ada@example.org"]
    assert (ada["id"], ada["active"], ada["deleted_at"]) == (ada_id, True, None)


def test_a_profile_removed_from_a_list_file_is_deactivated(engine: Engine, subs: Path) -> None:
    sync(engine, subs)
    write_profile(subs, "team/list.yaml", profile_yaml("bob@example.org", "diffusion"))
    _, result = sync(engine, subs)
    assert result.deactivated == ("cy@example.org",)
    assert subscriber_rows(engine)["bob@example.org"]["deleted_at"] is None


def test_a_profile_moved_to_another_file_stays_the_same_subscriber(
    engine: Engine, subs: Path
) -> None:
    sync(engine, subs)
    ada_id = subscriber_rows(engine)["ada@example.org"]["id"]
    (subs / "ada.yaml").rename(subs / "team" / "ada.yaml")
    _, result = sync(engine, subs)
    assert (result.updated, result.deactivated) == (("ada@example.org",), ())
    ada = subscriber_rows(engine)["ada@example.org"]
    assert (ada["id"], ada["source_file"], ada["deleted_at"]) == (ada_id, "team/ada.yaml", None)


def test_broken_yaml_in_one_file_leaves_its_subscribers_exactly_as_they_were(
    engine: Engine, subs: Path
) -> None:
    sync(engine, subs)
    before = subscriber_rows(engine)
    write_profile(subs, "team/list.yaml", TEAM.replace("  - diffusion", "  - [diffusion"))
    write_profile(subs, "ada.yaml", ADA.replace("max_items: 10", "max_items: 3"))
    write_profile(subs, "new.yaml", profile_yaml("dee@example.org", "rl"))
    loaded, result = sync(engine, subs, NOW + timedelta(hours=1))
    assert [(Path(p.path).name, p.detail.split(":")[0]) for p in loaded.problems] == [
        ("list.yaml", "YAML syntax error")
    ]
    assert (result.created, result.updated, result.deactivated) == (
        ("dee@example.org",),
        ("ada@example.org",),
        (),
    )
    after = subscriber_rows(engine)
    assert after["bob@example.org"] == before["bob@example.org"]
    assert after["cy@example.org"] == before["cy@example.org"]


def test_an_invalid_profile_is_held_and_nobody_in_its_file_is_deactivated(
    engine: Engine, subs: Path
) -> None:
    sync(engine, subs)
    before = subscriber_rows(engine)
    # Bob's timezone is mistyped and Cy's address lost its domain: neither may be lost.
    broken = profile_yaml("bob@example.org", "video", timezone="Europe/Berln") + "---\n"
    broken += profile_yaml("cy@", "agents")
    write_profile(subs, "team/list.yaml", broken)
    loaded, result = sync(engine, subs, NOW + timedelta(hours=1))
    assert [p.field for p in loaded.problems] == ["timezone", "email"]
    assert result.held == ("bob@example.org",)
    assert (result.updated, result.deactivated) == ((), ())
    after = subscriber_rows(engine)
    assert after["bob@example.org"] == before["bob@example.org"]
    assert after["cy@example.org"] == before["cy@example.org"]


def test_a_duplicate_email_leaves_the_existing_subscriber_as_it_was(
    engine: Engine, subs: Path
) -> None:
    sync(engine, subs)
    before = subscriber_rows(engine)
    write_profile(subs, "zz-copy.yaml", profile_yaml("Ada@example.org", "something else"))
    loaded, result = sync(engine, subs, NOW + timedelta(hours=1))
    [problem] = loaded.problems
    assert "ada.yaml:1" in problem.detail and problem.path.endswith("zz-copy.yaml")
    assert result.held == ("ada@example.org",)
    assert subscriber_rows(engine) == before


@pytest.mark.parametrize("by_id", [False, True], ids=["by-address", "by-id"])
def test_an_unsubscribe_always_wins_over_active_true(
    engine: Engine, subs: Path, by_id: bool
) -> None:
    sync(engine, subs)
    suppress(engine, "ada@example.org", by_id=by_id)
    write_profile(subs, "ada.yaml", ADA.replace("max_items: 10", "max_items: 9") + "active: true\n")
    _, result = sync(engine, subs, NOW + timedelta(hours=1))
    assert result.updated == ("ada@example.org",)
    assert result.suppressed == ("ada@example.org",)
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(Suppression)) == 1
        ada = subscriber_id(session, "ada@example.org")
        bob = subscriber_id(session, "bob@example.org")
        assert ada is not None and bob is not None
        assert is_suppressed(session, ada) and not is_suppressed(session, bob)
        assert active_subscriber_ids(session) == [bob]
        assert set(load_profiles(session, [ada, bob])) == {bob}
        assert set(load_profiles(session, [ada, bob], include_suppressed=True)) == {ada, bob}
        status = {s.email: s.status for s in list_subscribers(session)}
        assert status["ada@example.org"] == "unsubscribed"


def test_a_missing_directory_raises_and_deactivates_nobody(engine: Engine, subs: Path) -> None:
    sync(engine, subs)
    before = subscriber_rows(engine)
    with pytest.raises(ProfileError, match="not a directory"):
        sync(engine, subs.parent / "typo")
    assert subscriber_rows(engine) == before


def test_sync_works_in_bulk_not_one_statement_per_profile(engine: Engine, tmp_path: Path) -> None:
    """Create, update and deactivate: the same few statements for 20 or 2,000 profiles
    (give or take one per 500 rows, the size of a bulk chunk)."""

    def team(n: int, keyword: str) -> str:
        return "".join(
            f"- email: u{n}-{i}@example.org\n  keywords: [{keyword}]\n" for i in range(n)
        )

    counts: dict[int, list[int]] = {}
    for n in (20, 2000):
        directory = tmp_path / f"d{n}"
        write_profile(directory, "other.yaml", profile_yaml("other@example.org"))
        steps = []
        for keyword in ("rl", "diffusion"):  # create every profile, then update every one
            write_profile(directory, "team.yaml", team(n, keyword))
            with count_statements(engine) as seen:
                _, result = sync(engine, directory)
            steps.append(len(seen))
        assert len(result.updated) == n
        (directory / "team.yaml").unlink()
        with count_statements(engine) as seen:
            _, result = sync(engine, directory)
        assert len(result.deactivated) == n
        steps.append(len(seen))
        counts[n] = steps
    for small, large in zip(counts[20], counts[2000], strict=True):
        assert large <= small + 2000 // 500, counts


# -- candidate windows --------------------------------------------------------------------


def _subscriber(engine: Engine, directory: Path, email: str, **extra: str) -> int:
    write_profile(directory, f"{email.split('@')[0]}.yaml", profile_yaml(email, "rl", **extra))
    sync(engine, directory, NOW - timedelta(days=30))
    with session_scope(engine) as session:
        sid = subscriber_id(session, email)
    assert sid is not None
    return sid


def test_a_new_subscriber_gets_what_was_first_fetched_in_the_last_period(
    engine: Engine, tmp_path: Path
) -> None:
    daily = _subscriber(engine, tmp_path, "d@example.org")
    weekly = _subscriber(engine, tmp_path, "w@example.org", frequency="weekly")
    old_paper = NOW - timedelta(days=800)
    ids = add_entries(
        engine,
        [
            Seed(
                "two hours ago, published long ago", NOW - timedelta(hours=2), published=old_paper
            ),
            Seed("three days ago", NOW - timedelta(days=3)),
            Seed("ten days ago", NOW - timedelta(days=10)),
            Seed("after now", NOW + timedelta(minutes=1)),
        ],
    )
    with session_scope(engine) as session:
        articles, windows = candidate_windows(
            session, [daily, weekly], now=NOW, frequency_of={daily: "daily", weekly: "weekly"}
        )
    assert sorted(a.id for a in articles) == ids[:2]  # the union of both windows
    assert windows[daily].article_ids == {ids[0]}
    assert windows[weekly].article_ids == {ids[0], ids[1]}
    assert (windows[daily].start, windows[daily].end) == (NOW - timedelta(days=1), NOW)
    first = next(a for a in articles if a.id == ids[0])
    assert (first.feed_name, first.published) == ("daily-papers", old_paper)


def test_the_window_starts_at_the_last_digest_sent_and_skips_what_it_held(
    engine: Engine, tmp_path: Path
) -> None:
    sid = _subscriber(engine, tmp_path, "d@example.org")
    ids = add_entries(
        engine,
        [
            Seed("before the last digest", NOW - timedelta(days=3)),
            Seed("sent already", NOW - timedelta(days=2, hours=1)),
            Seed("new since", NOW - timedelta(days=2)),
            Seed("newer", NOW - timedelta(hours=5)),
        ],
    )
    last_sent = NOW - timedelta(days=2, hours=2)
    add_digest(
        engine, sid, status="sent", window_start=last_sent - timedelta(days=1), window_end=last_sent
    )
    # A digest still being sent holds the "sent already" entry; its window end counts too.
    add_digest(
        engine,
        sid,
        status="sending",
        window_start=last_sent,
        window_end=last_sent + timedelta(minutes=30),
        entry_ids=[ids[1]],
        period="2026-W02",
    )
    with session_scope(engine) as session:
        _, windows = candidate_windows(session, [sid], now=NOW, frequency_of={sid: "daily"})
        assert windows[sid].start == last_sent + timedelta(minutes=30)
        assert windows[sid].article_ids == {ids[2], ids[3]}
        # --since widens the window (inclusive) but never re-offers what was sent.
        _, wide = candidate_windows(
            session, [sid], now=NOW, since=NOW - timedelta(days=3), frequency_of={sid: "daily"}
        )
        assert wide[sid].article_ids == {ids[0], ids[2], ids[3]}


def test_candidates_of_a_batch_cost_a_fixed_number_of_queries(
    engine: Engine, tmp_path: Path
) -> None:
    add_entries(engine, [Seed(f"paper {i}", NOW - timedelta(hours=i)) for i in range(30)])
    many = [_subscriber(engine, tmp_path, f"s{i}@example.org") for i in range(12)]
    counts = []
    for batch in (many[:2], many):
        with session_scope(engine) as session, count_statements(engine) as seen:
            articles, windows = candidate_windows(
                session, batch, now=NOW, frequency_of=dict.fromkeys(batch, "daily")
            )
        assert len(windows) == len(batch) and len(articles) == 24
        counts.append(len(seen))
    assert counts[0] == counts[1]


def test_load_candidates_is_first_seen_after_since_up_to_until(engine: Engine) -> None:
    ids = add_entries(engine, [Seed(str(h), NOW - timedelta(hours=h)) for h in (0, 1, 2, 3)])
    with session_scope(engine) as session:
        got = load_candidates(
            session, since=NOW - timedelta(hours=3), until=NOW - timedelta(hours=1)
        )
    assert [a.id for a in got] == [ids[2], ids[1]]  # oldest first; (since, until]
