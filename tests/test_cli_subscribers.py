"""``newsletter subscribers check|sync|list`` and ``newsletter match`` through click."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine

from newsletter.cli import cli
from newsletter.db import connect
from tests.support.subscribers import (
    Seed,
    add_entries,
    profile_yaml,
    subscriber_rows,
    suppress,
    write_profile,
)

AS_OF = datetime(2026, 1, 9, 6, 0, tzinfo=UTC)
ADA = """\
email: ada@example.org
name: Ada Lovelace
keywords:
  - reinforcement learning
  - term: RLHF
    weight: 2
  - reward model
exclude: [survey]
max_items: 3
timezone: Europe/Berlin
"""


@pytest.fixture
def project(tmp_path: Path, db_url: str) -> Path:
    """A config with its own database and a subscribers directory."""
    (tmp_path / "newsletter.toml").write_text(
        f'[database]\nurl = "{db_url}"\n\n[newsletter]\nsubscribers_dir = "subscribers"\n'
        "max_items = 5\n",
        encoding="utf-8",
    )
    subs = tmp_path / "subscribers"
    write_profile(subs, "ada.yaml", ADA)
    write_profile(subs, "bob.yaml", profile_yaml("bob@example.org", "diffusion model"))
    return tmp_path


def invoke(project: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(project / "newsletter.toml"), *args])


@pytest.fixture
def db(project: Path, db_url: str) -> Engine:
    engine = connect(db_url)
    yield engine  # type: ignore[misc]
    engine.dispose()


# -- check -----------------------------------------------------------------------------


def test_check_passes_on_valid_profiles(project: Path) -> None:
    result = invoke(project, "subscribers", "check")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert result.stderr == "2 files, 2 valid profiles, 0 problems\n"


def test_check_prints_each_problem_on_its_line_and_exits_1(tmp_path: Path) -> None:
    # No database in the config: check must not need one, nor create one.
    (tmp_path / "newsletter.toml").write_text(
        f'[database]\nurl = "sqlite:///{tmp_path / "never.db"}"\n', encoding="utf-8"
    )
    subs = tmp_path / "subscribers"
    write_profile(subs, "a.yaml", "email: a@example.org\nkeywords: [x]\ntimezon: UTC\n")
    write_profile(subs, "b.yaml", "email: b@example\nkeywords: [x\n")
    write_profile(subs, "c.yaml", profile_yaml("c@example.org"))
    result = CliRunner().invoke(
        cli, ["--config", str(tmp_path / "newsletter.toml"), "subscribers", "check", str(subs)]
    )
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0] == f"{subs / 'a.yaml'}:3: timezon: unknown key (did you mean 'timezone'?)"
    assert lines[1].startswith(f"{subs / 'b.yaml'}:3: YAML syntax error: ")
    assert len(lines) == 2
    assert result.stderr == "3 files, 1 valid profiles, 2 problems\n"
    assert not (tmp_path / "never.db").exists()


def test_check_of_a_missing_directory_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["subscribers", "check", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert result.stderr == f"error: {tmp_path / 'nope'}: no such directory or file\n"


# -- sync and list -----------------------------------------------------------------------


def test_sync_creates_then_is_idempotent(project: Path, db: Engine) -> None:
    first = invoke(project, "subscribers", "sync")
    assert first.exit_code == 0, first.output
    assert first.stdout.splitlines()[0] == (
        "2 profiles in 2 files: 2 created, 0 updated, 0 unchanged, 0 deactivated"
    )
    again = invoke(project, "subscribers", "sync", "-v")
    assert again.exit_code == 0
    assert (
        again.stdout == "2 profiles in 2 files: 0 created, 0 updated, 2 unchanged, 0 deactivated\n"
    )
    assert set(subscriber_rows(db)) == {"ada@example.org", "bob@example.org"}


def test_sync_applies_the_valid_files_and_exits_1_for_the_broken_one(
    project: Path, db: Engine
) -> None:
    invoke(project, "subscribers", "sync")
    before = subscriber_rows(db)
    subs = project / "subscribers"
    write_profile(subs, "bob.yaml", "email: bob@example.org\nkeywords: [diffusion\n")
    write_profile(subs, "cy.yaml", profile_yaml("cy@example.org", "agents"))
    result = invoke(project, "subscribers", "sync")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"{subs / 'bob.yaml'}:")
    assert result.stdout.splitlines() == [
        "2 profiles in 3 files: 1 created, 0 updated, 1 unchanged, 0 deactivated",
        "  left as they were: the subscribers of bob.yaml (it has problems)",
    ]
    after = subscriber_rows(db)
    assert after["bob@example.org"] == before["bob@example.org"]
    assert "cy@example.org" in after


def test_sync_dry_run_changes_nothing(project: Path, db: Engine) -> None:
    result = invoke(project, "subscribers", "sync", "--dry-run", "--verbose")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "2 profiles in 2 files: 2 created, 0 updated, 0 unchanged, 0 deactivated "
        "(dry run: nothing changed)",
        "  created: ada@example.org",
        "  created: bob@example.org",
    ]
    assert subscriber_rows(db) == {}


def test_sync_reports_deactivated_and_unsubscribed(project: Path, db: Engine) -> None:
    invoke(project, "subscribers", "sync")
    suppress(db, "ada@example.org")
    (project / "subscribers" / "bob.yaml").unlink()
    write_profile(project / "subscribers", "ada.yaml", ADA.replace("max_items: 3", "max_items: 4"))
    result = invoke(project, "subscribers", "sync")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1:] == [
        "  deactivated (profile gone): bob@example.org",
        "  stays unsubscribed: ada@example.org",
    ]
    listed = invoke(project, "subscribers", "list", "--all", "--json")
    assert [(r["email"], r["status"]) for r in json.loads(listed.stdout)] == [
        ("ada@example.org", "unsubscribed"),
        ("bob@example.org", "deleted"),
    ]
    plain = invoke(project, "subscribers", "list")
    assert plain.stdout == "ada@example.org\tunsubscribed\tdaily\t3\tada.yaml\n"


def test_list_shows_when_each_active_subscriber_gets_the_next_digest(
    project: Path, db: Engine
) -> None:
    invoke(project, "subscribers", "sync")
    suppress(db, "bob@example.org")
    before = datetime.now(UTC)
    rows = {
        r["email"]: r for r in json.loads(invoke(project, "subscribers", "list", "--json").stdout)
    }
    assert rows["bob@example.org"]["next_digest_at"] is None  # unsubscribed: none
    at = datetime.fromisoformat(rows["ada@example.org"]["next_digest_at"])
    # Daily at the config's 07:00, in Ada's own timezone: the next such moment.
    local = at.astimezone(ZoneInfo("Europe/Berlin"))
    assert (local.hour, local.minute) == (7, 0)
    assert before < at <= before + timedelta(days=1)


# -- match -----------------------------------------------------------------------------


@pytest.fixture
def seeded(project: Path, db: Engine) -> list[int]:
    assert invoke(project, "subscribers", "sync").exit_code == 0
    hour = timedelta(hours=1)
    return add_entries(
        db,
        [
            Seed("Secrets of RLHF: reward modeling", AS_OF - 2 * hour, "About RLHF.", upvotes=3),
            Seed("A survey of RLHF", AS_OF - 3 * hour, "Everything on RLHF.", upvotes=50),
            Seed("Reinforcement learning for robots", AS_OF - 4 * hour, upvotes=7),
            Seed("Diffusion models for video", AS_OF - 5 * hour, "A diffusion model."),
            Seed("Policy gradients", AS_OF - 6 * hour, "Reinforcement learning, again.", upvotes=1),
            Seed("Old RLHF news", AS_OF - timedelta(days=3), "RLHF."),
        ],
    )


def test_match_json_is_pure_json_ranked_and_explained(project: Path, seeded: list[int]) -> None:
    result = invoke(
        project, "match", "--subscriber", "Ada@Example.org", "--as-of", AS_OF.isoformat(), "--json"
    )
    assert result.exit_code == 0, result.output
    matches = json.loads(result.stdout)
    assert [m["title"] for m in matches] == [
        "Secrets of RLHF: reward modeling",
        "Reinforcement learning for robots",
        "Policy gradients",
    ]
    top = matches[0]
    assert top["link"].startswith("https://example.org/papers/")
    assert top["score"] == 2 * (3 + 1) + 3
    assert top["matched"] == [
        {"keyword": "RLHF", "field": "title"},
        {"keyword": "RLHF", "field": "abstract"},
        {"keyword": "reward model", "field": "title"},
    ]
    assert [h["text"] for h in top["hits"]] == [["RLHF"], ["RLHF"], ["reward modeling"]]
    assert (top["rank"], top["upvotes"], top["feed"]) == (1, 3, "daily-papers")


def test_match_limit_and_since(project: Path, seeded: list[int]) -> None:
    args = ["match", "--subscriber", "ada@example.org", "--as-of", "2026-01-09T06:00", "--json"]
    assert len(json.loads(invoke(project, *args, "--limit", "1").stdout)) == 1
    everything = json.loads(invoke(project, *args, "--limit", "0", "--since", "2026-01-06").stdout)
    assert "Old RLHF news" in [m["title"] for m in everything]
    assert len(everything) == 4  # the survey stays excluded
    plain = invoke(project, *args[:-1], "--since", "2026-01-06")
    assert plain.exit_code == 0, plain.output
    assert "new entries (2026-01-06 00:00 .. 2026-01-09 06:00 UTC)" in plain.stderr


def test_match_plain_output_off_a_terminal(project: Path, seeded: list[int]) -> None:
    result = invoke(
        project, "match", "--subscriber", "bob@example.org", "--as-of", "2026-01-09T06:00"
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "1\t4\tDiffusion models for video\tdiffusion model (title, abstract)\n"
    )
    assert result.stderr == (
        "bob@example.org: 5 new entries (2026-01-08 06:00 .. 2026-01-09 06:00 UTC), "
        "1 matched, showing 1\n"
    )


def test_match_unknown_subscriber_is_one_line_and_exit_1(project: Path, seeded: list[int]) -> None:
    result = invoke(project, "match", "--subscriber", "nobody@example.org", "--json")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert (
        result.stderr
        == "error: no subscriber with address nobody@example.org (is the profile synced?)\n"
    )


def test_match_bad_date_is_a_usage_error(project: Path, seeded: list[int]) -> None:
    result = invoke(project, "match", "--subscriber", "ada@example.org", "--since", "yesterday")
    assert result.exit_code == 2
    assert "expected a date like 2026-01-09" in result.stderr
