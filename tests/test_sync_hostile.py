"""Hostile and mistaken input to ``subscribers check|sync``: nobody is lost, nothing hangs.

Duplicates inside one file, numbers no column holds, an empty directory, special files,
symlinks out of the directory, typos that still parse; and the files a run creates are
private.
"""

from __future__ import annotations

import os
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine

from newsletter.cli import cli
from newsletter.db import connect, session_scope
from newsletter.db.subscribers import SyncResult, sync_subscribers
from newsletter.domain import Keyword, Profile
from newsletter.errors import SyncRefused
from newsletter.pipeline.sync import sync_directory
from newsletter.profiles import LoadResult, read_profiles
from tests.support.subscribers import profile_yaml, subscriber_rows, write_profile

NOW = datetime(2026, 1, 9, 6, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)
TEAM = "---\n".join(
    profile_yaml(f"{name}@example.org", "diffusion")
    for name in ("ann", "bob", "cy", "dee", "eve", "fay", "gus", "hal", "ivy", "jo")
)


def sync(
    engine: Engine, directory: Path, now: datetime = NOW, share: float | None = 0.2
) -> tuple[LoadResult, SyncResult]:
    with session_scope(engine) as session:
        return sync_directory(session, directory, now=now, max_deactivate_share=share)


@pytest.fixture
def subs(tmp_path: Path) -> Path:
    directory = tmp_path / "subscribers"
    write_profile(directory, "team.yaml", TEAM)
    write_profile(directory, "solo.yaml", profile_yaml("solo@example.org", "agents"))
    return directory


# -- item: a duplicate inside one file ------------------------------------------------


def test_a_duplicate_address_inside_one_file_leaves_all_its_subscribers_as_they_were(
    engine: Engine, subs: Path
) -> None:
    sync(engine, subs)
    before = subscriber_rows(engine)
    # bob's entry was overwritten with ann's address: bob must not be deactivated,
    # and no other profile of the file is applied either.
    edited = TEAM.replace("bob@example.org", "ann@example.org").replace(
        "cy@example.org\nkeywords:\n  - diffusion", "cy@example.org\nkeywords:\n  - video"
    )
    write_profile(subs, "team.yaml", edited)
    loaded, result = sync(engine, subs, LATER)
    assert ["duplicate email" in p.detail for p in loaded.problems] == [True], loaded.problems
    assert (result.created, result.updated, result.deactivated) == ((), (), ())
    assert subscriber_rows(engine) == before


# -- item: numbers no column holds; one database error never blocks the rest ----------


@pytest.mark.parametrize("value", ["9223372036854775808", "1001", "0"])
def test_max_items_out_of_range_is_a_file_line_problem(tmp_path: Path, value: str) -> None:
    path = write_profile(
        tmp_path, "a.yaml", profile_yaml("a@example.org", "x") + f"max_items: {value}\n"
    )
    [problem] = read_profiles(path).problems
    assert (problem.line, problem.field) == (4, "max_items")
    assert f"expected 1 to 1000, got {value}" in str(problem)


def test_a_huge_weight_is_a_problem(tmp_path: Path) -> None:
    text = "email: a@example.org\nkeywords:\n  - {term: x, weight: 5000}\n"
    [problem] = read_profiles(write_profile(tmp_path, "a.yaml", text)).problems
    assert (problem.line, problem.field) == (3, "keywords.weight")


def test_a_database_error_on_one_profile_does_not_block_the_others(engine: Engine) -> None:
    good = Profile(email="good@example.org", keywords=(Keyword("x"),), source="good.yaml")
    bad = Profile(
        email="bad@example.org", keywords=(Keyword("x"),), max_items=2**63, source="bad.yaml"
    )
    with session_scope(engine) as session:
        result = sync_subscribers(session, [bad, good], now=NOW)
    assert result.created == ("good@example.org",)
    [(source, email, message)] = result.failed
    assert (source, email) == ("bad.yaml", "bad@example.org")
    assert message.startswith("database error")
    assert set(subscriber_rows(engine)) == {"good@example.org"}


# -- item: mass deactivation ------------------------------------------------------------


def test_an_empty_directory_deactivates_nobody(engine: Engine, subs: Path) -> None:
    sync(engine, subs)
    before = subscriber_rows(engine)
    for f in subs.iterdir():
        f.unlink()
    with pytest.raises(SyncRefused, match="all 11 subscribers"):
        sync(engine, subs, LATER)
    assert subscriber_rows(engine) == before


def test_more_than_the_share_needs_the_flag(engine: Engine, subs: Path) -> None:
    sync(engine, subs)
    before = subscriber_rows(engine)
    (subs / "team.yaml").unlink()  # 10 of 11
    with pytest.raises(SyncRefused, match="10 of 11"):
        sync(engine, subs, LATER)
    assert subscriber_rows(engine) == before
    _, result = sync(engine, subs, LATER, share=None)
    assert len(result.deactivated) == 10


def test_one_subscriber_leaving_is_not_refused(engine: Engine, subs: Path) -> None:
    sync(engine, subs)
    (subs / "solo.yaml").unlink()
    _, result = sync(engine, subs, LATER)
    assert result.deactivated == ("solo@example.org",)


def _project(tmp_path: Path, db_url: str, subs: Path) -> Path:
    (tmp_path / "newsletter.toml").write_text(
        f'[database]\nurl = "{db_url}"\n\n[newsletter]\nsubscribers_dir = "{subs}"\n',
        encoding="utf-8",
    )
    return tmp_path / "newsletter.toml"


def invoke(config: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config), *args])


def test_cli_refuses_in_one_line_and_the_flag_allows(
    tmp_path: Path, db_url: str, subs: Path
) -> None:
    config = _project(tmp_path, db_url, subs)
    assert invoke(config, "subscribers", "sync").exit_code == 0
    for f in subs.iterdir():
        f.unlink()
    refused = invoke(config, "subscribers", "sync")
    assert refused.exit_code != 0
    lines = [line for line in refused.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "refusing to deactivate all 11" in lines[0]
    assert "Traceback" not in refused.output
    allowed = invoke(config, "subscribers", "sync", "--allow-mass-deactivation")
    assert allowed.exit_code == 0, allowed.output
    assert "11 deactivated" in allowed.output


# -- items: special files and symlinks ----------------------------------------------------


def test_a_symlink_to_dev_zero_is_skipped_and_named(engine: Engine, subs: Path) -> None:
    sync(engine, subs)
    before = subscriber_rows(engine)
    (subs / "solo.yaml").unlink()
    (subs / "solo.yaml").symlink_to("/dev/zero")
    loaded, result = sync(engine, subs, LATER)
    [problem] = loaded.problems
    assert problem.path.endswith("solo.yaml") and "skipped" in problem.detail
    assert result.deactivated == ()
    assert subscriber_rows(engine) == before


def test_a_fifo_does_not_hang_check_or_sync(engine: Engine, subs: Path) -> None:
    sync(engine, subs)
    os.mkfifo(subs / "f.yaml")
    done: list[LoadResult] = []
    worker = threading.Thread(target=lambda: done.append(sync(engine, subs, LATER)[0]))
    worker.start()
    worker.join(60)
    if worker.is_alive():  # unblock the reader so the test process can end
        with open(subs / "f.yaml", "w"):
            pass
        worker.join()
        pytest.fail("sync blocked on a FIFO")
    [problem] = done[0].problems
    assert problem.path.endswith("f.yaml") and "not a regular file" in problem.detail


def test_a_file_over_the_size_limit_is_skipped(subs: Path) -> None:
    write_profile(subs, "big.yaml", profile_yaml("big@example.org", "x") + "#" * (1 << 20))
    [problem] = read_profiles(subs).problems
    assert problem.path.endswith("big.yaml") and "1024 KiB" in problem.detail


def test_a_symlink_out_of_the_directory_is_not_followed_nor_echoed(
    subs: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "shadow"
    secret.write_text("daemon:$6$HASHXYZ:19000:0:99999:7:::\n", encoding="utf-8")
    (subs / "evil.yaml").symlink_to(secret)
    # A symlink to a file inside the directory is fine (hidden dirs are not walked).
    inside = write_profile(subs, ".shared/real.yaml", profile_yaml("in@example.org", "x"))
    (subs / "alias.yml").symlink_to(inside)
    loaded = read_profiles(subs)
    assert "in@example.org" in {p.email for p in loaded.profiles}
    [problem] = loaded.problems
    assert problem.path.endswith("evil.yaml") and "outside the subscribers directory" in str(
        problem
    )
    assert all("HASHXYZ" not in str(p) and "daemon" not in str(p) for p in loaded.problems)


# -- item: typos that still parse ----------------------------------------------------------


def test_a_keyword_run_on_over_a_dash_line_warns_with_file_line(tmp_path: Path) -> None:
    text = "email: a@example.org\nkeywords:\n  - diffusion\n   - agent\n"
    loaded = read_profiles(write_profile(tmp_path, "a.yaml", text))
    assert loaded.problems == ()
    [warning] = loaded.warnings
    assert (warning.line, warning.field) == (3, "keywords")
    assert "a.yaml:3: keywords: warning" in str(warning)
    assert "'diffusion - agent'" in str(warning)


def test_a_tab_used_for_indentation_is_named(tmp_path: Path) -> None:
    text = "email: a@example.org\nkeywords:\n\t- diffusion\n"
    [problem] = read_profiles(write_profile(tmp_path, "a.yaml", text)).problems
    assert problem.line == 3 and "tab" in problem.detail


def test_a_change_of_address_within_a_file_is_shown(
    tmp_path: Path, db_url: str, subs: Path
) -> None:
    config = _project(tmp_path, db_url, subs)
    invoke(config, "subscribers", "sync")
    write_profile(subs, "team.yaml", TEAM.replace("bob@example.org", "b!b@example.org"))
    for args in (("--dry-run",), ()):
        out = invoke(config, "subscribers", "sync", *args)
        assert out.exit_code == 0, out.output
        assert "address changed in team.yaml: bob@example.org -> b!b@example.org" in out.output


# -- item: private files --------------------------------------------------------------------


def test_a_new_sqlite_database_is_private(tmp_path: Path) -> None:
    path = tmp_path / "new" / "newsletter.db"
    connect(f"sqlite:///{path}").dispose()
    for f in [path, *path.parent.glob("newsletter.db-*")]:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_preview_outbox_files_and_dirs_are_private(tmp_path: Path) -> None:
    from newsletter.delivery import OutgoingMessage, PreviewSender

    out = OutgoingMessage(
        "d@example.org",
        "ada@example.org",
        b"Subject: x\r\n\r\nhi\r\n",
        "<m@x>",
        digest_id=7,
        period="2026-03-29",
    )
    sender = PreviewSender(tmp_path / "outbox")
    sender.send(out)
    path = sender.path_for(out)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for directory in (path.parent, path.parent.parent, tmp_path / "outbox"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
