"""``newsletter preview``: the digests of a day on disk, an index, and nothing else changed.

Real components end to end: the golden Atom file fetched into a real database (SQLite
and PostgreSQL), YAML profiles synced, then preview through the pipeline and the CLI.
"""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from newsletter import models
from newsletter.cli import cli, main
from newsletter.config import Settings
from newsletter.db import session_scope
from newsletter.errors import NewsletterError
from newsletter.models import Digest, Suppression
from newsletter.pipeline.compose import Composer, day_jobs
from newsletter.pipeline.preview import INDEX, run_preview, safe_name
from newsletter.render import Renderer
from tests.support.digests import preview_config

NOW = datetime(2026, 11, 22, 9, 30, tzinfo=UTC)


def _counts(engine: Engine) -> dict[str, int]:
    with Session(engine) as session:
        return {
            t.name: session.scalar(select(func.count()).select_from(t)) or 0
            for t in models.Base.metadata.sorted_tables
        }


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_preview_writes_each_digest_and_an_index(preview_world: tuple[Settings, Engine]) -> None:
    settings, engine = preview_world
    before = _counts(engine)
    result = run_preview(engine, settings, now=NOW)
    out = settings.newsletter.outbox_dir
    assert result.index == out / INDEX
    rows = {r.email: r for r in result.rows}
    assert set(rows) == {
        "ada@example.org",
        "bob@example.org",
        "chloe@example.org",
        "dan@example.org",
    }
    ada = rows["ada@example.org"]
    assert ada.day == "2026-11-22" and ada.n_entries >= 3
    for ext in (".html", ".txt", ".eml"):
        assert (out / "2026-11-22" / f"ada@example.org{ext}").is_file()
    assert ada.html_href == "2026-11-22/ada@example.org.html"
    assert rows["chloe@example.org"].n_entries == 2  # max_items
    assert rows["bob@example.org"].note.startswith("no email")
    assert not (out / "2026-11-22" / "bob@example.org.html").exists()
    # Dan is weekly, in Los Angeles, where it is still 22 Nov (Sunday, his weekday).
    assert rows["dan@example.org"].day == "2026-11-22"

    eml = email.message_from_bytes((out / ada.eml_href).read_bytes(), policy=email.policy.default)
    assert eml["To"] == "Ada Lovelace <ada@example.org>"
    assert eml["Subject"] == ada.subject and ada.subject.startswith("Your entries for Sun 22 Nov")
    assert eml["Date"] == "Sun, 22 Nov 2026 07:00:00 +0100"  # send_time in Berlin
    unsub = eml["List-Unsubscribe"]
    assert re.fullmatch(r"<https://news\.example\.org/unsubscribe/[A-Za-z0-9_-]+>", unsub)
    html = (out / ada.html_href).read_text(encoding="utf-8")
    assert unsub.strip("<>") in html
    assert "<mark" in html and "Hi Ada Lovelace," in html
    text = (out / ada.text_href).read_text(encoding="utf-8")
    assert text.startswith("Hi Ada Lovelace,")

    index = result.index.read_text(encoding="utf-8")
    for r in result.rows:
        assert r.email in index
    assert index.count('href="2026-11-22/ada@example.org.') == 4  # subject + 3 files
    assert "no email: nothing new matched" in index
    assert _counts(engine) == before  # nothing written to the database


def test_running_twice_gives_identical_files(preview_world: tuple[Settings, Engine]) -> None:
    settings, engine = preview_world
    run_preview(engine, settings, now=NOW)
    first = _files(settings.newsletter.outbox_dir)
    run_preview(engine, settings, now=NOW.replace(minute=45))
    assert _files(settings.newsletter.outbox_dir) == first
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(Digest)) == 0


def test_one_subscriber_another_day_another_dir(
    preview_world: tuple[Settings, Engine], tmp_path: Path
) -> None:
    settings, engine = preview_world
    out = tmp_path / "elsewhere"
    result = run_preview(
        engine, settings, now=NOW, out_dir=out, emails=["ADA@example.org"], day=date(2026, 11, 21)
    )
    assert [r.email for r in result.rows] == ["ada@example.org"]
    # The entries were first fetched on the 22nd, after the digest of the 21st was due.
    assert result.rows[0].note.startswith("no email")
    assert (out / INDEX).is_file()
    with pytest.raises(NewsletterError, match=r"nobody@example\.org"):
        run_preview(engine, settings, now=NOW, out_dir=out, emails=["nobody@example.org"])


def test_unsubscribed_subscribers_are_not_previewed(preview_world: tuple[Settings, Engine]) -> None:
    settings, engine = preview_world
    with session_scope(engine) as session:
        session.add(Suppression(email="ada@example.org", source="operator"))
    result = run_preview(engine, settings, now=NOW)
    assert "ada@example.org" not in {r.email for r in result.rows}


def test_stale_files_of_a_subscriber_with_nothing_new_are_removed(
    preview_world: tuple[Settings, Engine],
) -> None:
    settings, engine = preview_world
    day_dir = settings.newsletter.outbox_dir / "2026-11-22"
    day_dir.mkdir(parents=True)
    stale = day_dir / "bob@example.org.html"
    stale.write_text("old")
    run_preview(engine, settings, now=NOW)
    assert not stale.exists()


def test_preview_composes_what_send_would(preview_world: tuple[Settings, Engine]) -> None:
    settings, engine = preview_world
    composer = Composer(settings, renderer=Renderer(settings.newsletter))
    with Session(engine) as session:
        from newsletter.db.subscriber_reads import active_subscriber_ids, load_profiles

        profiles = load_profiles(session, active_subscriber_ids(session))
        jobs = day_jobs(settings, profiles, now=NOW)
        digests = {d.profile.email: d for d in composer.compose(session, jobs)}
    ada = digests["ada@example.org"]
    assert ada.period == "2026-11-22" and ada.window_end == NOW
    assert ada.email is not None
    assert ada.entry_ids == tuple(m.article.id for m in ada.matches)
    assert [i for i, _ in ada.entries] == list(ada.entry_ids)
    assert digests["dan@example.org"].period == "2026-W47"
    assert digests["bob@example.org"].email is None


def test_batches_with_the_same_articles_share_one_index(
    preview_world: tuple[Settings, Engine],
) -> None:
    """A send's batches share one window: the composer builds the matcher index once."""
    settings, engine = preview_world
    composer = Composer(settings, renderer=Renderer(settings.newsletter))
    with Session(engine) as session:
        from newsletter.db.subscriber_reads import active_subscriber_ids, load_profiles

        profiles = load_profiles(session, active_subscriber_ids(session))
        jobs = [j for j in day_jobs(settings, profiles, now=NOW) if j.period == "2026-11-22"]
        assert len(jobs) >= 2
        whole = {d.profile.email: d.email for d in composer.compose(session, jobs)}
        first = composer.compose(session, jobs[:1])
        index = composer._matcher
        second = composer.compose(session, jobs[1:])
        assert composer._matcher is index is not None
    assert {d.profile.email: d.email for d in [*first, *second]} == whole


def test_a_warmed_index_of_more_entries_serves_every_slice_unchanged(
    preview_world: tuple[Settings, Engine],
) -> None:
    """``warm`` (a parent before forking its workers) indexes the whole batch's entries;
    a slice of the batch is matched on that index, restricted to its own windows, and
    gets exactly what a composer of its own gives it."""
    settings, engine = preview_world
    warmed = Composer(settings, renderer=Renderer(settings.newsletter))
    with Session(engine) as session:
        from newsletter.db.subscriber_reads import active_subscriber_ids, load_profiles

        profiles = load_profiles(session, active_subscriber_ids(session))
        jobs = [j for j in day_jobs(settings, profiles, now=NOW) if j.period == "2026-11-22"]
        warmed.warm(session, jobs)
        index = warmed._matcher
        for part in (jobs[:1], jobs[1:]):
            alone = Composer(settings, renderer=Renderer(settings.newsletter))
            want = [(d.profile.email, d.matches, d.email) for d in alone.compose(session, part)]
            got = [(d.profile.email, d.matches, d.email) for d in warmed.compose(session, part)]
            assert got == want
            assert warmed._matcher is index is not None


def test_safe_name() -> None:
    assert safe_name("Ada@Example.org") == "ada@example.org"
    odd = safe_name("a/b@example.org")
    assert "/" not in odd and odd != safe_name("a_b@example.org")


def test_cli_preview(tmp_path: Path, db_url: str) -> None:
    config = preview_config(tmp_path, db_url)
    runner = CliRunner()
    fetched = runner.invoke(cli, ["--config", str(config), "fetch"])
    assert fetched.exit_code == 0, fetched.output
    synced = runner.invoke(cli, ["--config", str(config), "subscribers", "sync"])
    assert synced.exit_code == 0, synced.output
    result = runner.invoke(cli, ["--config", str(config), "preview"])
    assert result.exit_code == 0, result.output
    assert "ada@example.org:" in result.output
    assert "nothing was sent" in result.output
    index = tmp_path / "outbox" / INDEX
    assert f"open {index.resolve().as_uri()}" in result.output
    one = runner.invoke(
        cli,
        [
            "--config",
            str(config),
            "preview",
            "--subscriber",
            "bob@example.org",
            "--out",
            str(tmp_path / "b"),
            "--date",
            "2026-11-22",
        ],
    )
    assert one.exit_code == 0, one.output
    assert "bob@example.org: no email" in one.output
    bad = runner.invoke(cli, ["--config", str(config), "preview", "--date", "22/11/2026"])
    assert bad.exit_code == 2


def test_cli_unknown_subscriber_is_one_line(
    tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = preview_config(tmp_path, db_url)
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(config), "preview", "--subscriber", "x@y.org"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no subscriber x@y.org") and "\n" not in err
