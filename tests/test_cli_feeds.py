"""``newsletter init``, ``fetch`` and ``status`` through click, on the bundled sample data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from newsletter.cli import cli, load_command, main
from newsletter.config import ConfigError, check_base_url_for_smtp, load_settings

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_FEEDS = ("daily-papers-2026-01-09", "daily-papers-2025-10-31", "daily-papers-2025-11-28")


@pytest.fixture
def examples(tmp_path: Path) -> Path:
    """A copy of ``examples/``, so the checkout is never written; returns its config."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    return tmp_path / "examples" / "newsletter.toml"


def _run(config: Path, db_url: str, *args: str) -> Result:
    env = {"NEWSLETTER_DATABASE_URL": db_url}
    return CliRunner().invoke(cli, ["--config", str(config), *args], env=env)


def test_fetch_then_status_on_the_sample_data(examples: Path, db_url: str) -> None:
    result = _run(examples, db_url, "fetch")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines[:3]] == list(SAMPLE_FEEDS)
    assert lines[0].split()[1:5] == ["ok", "8", "new,", "0"]
    # The samples are Daily Papers JSON: a paper listed on two days is one entry (its
    # arXiv id), so 15 of the 162 listings are re-reads of a paper already stored.
    assert lines[-1].startswith("total: 3 feeds, 147 new, 0 updated, 15 unchanged (")

    again = _run(examples, db_url, "fetch")
    assert again.exit_code == 0
    assert again.stdout.splitlines()[-1].startswith(
        "total: 3 feeds, 0 new, 0 updated, 162 unchanged"
    )

    status = _run(examples, db_url, "status")
    assert status.exit_code == 0, status.output
    for name in SAMPLE_FEEDS:
        assert name in status.stdout
    assert "Entries: 147" in status.stdout
    assert (
        "Last fetch: " in status.stdout
        and ", ok: 3 feeds, 0 new, 0 updated, 162 unchanged, 0 failed" in status.stdout
    )

    data = json.loads(_run(examples, db_url, "status", "--json").stdout)
    assert [f["name"] for f in data["feeds"]] == list(SAMPLE_FEEDS)
    assert [f["entries"] for f in data["feeds"]] == [8, 69, 85]
    assert {f["last_status"] for f in data["feeds"]} == {"ok"}
    assert data["entries"]["total"] == 147
    assert data["entries"]["last_fetch"]["totals"]["unchanged"] == 162


def test_status_before_any_fetch(examples: Path, db_url: str) -> None:
    # status only reads: on an empty database it says which command creates the schema
    # (and creates nothing); after `db upgrade` it shows every feed as never fetched.
    missing = _run(examples, db_url, "status")
    assert missing.exit_code == 1
    assert "no database at" in missing.stderr and "newsletter db upgrade" in missing.stderr
    assert _run(examples, db_url, "db", "upgrade").exit_code == 0
    result = _run(examples, db_url, "status")
    assert result.exit_code == 0, result.output
    assert "never fetched" in result.stdout
    assert "Last fetch: never" in result.stdout


def test_a_failing_feed_exits_1_after_fetching_the_others(examples: Path, db_url: str) -> None:
    with examples.open("a", encoding="utf-8") as fh:
        fh.write('\n[[feeds]]\nname = "missing"\nurl = "feeds/does-not-exist.atom"\n')
    result = _run(examples, db_url, "fetch")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[3].split()[:3] == ["missing", "error", "file"]
    assert "147 new" in lines[-1] and "1 failed" in lines[-1]

    data = json.loads(_run(examples, db_url, "status", "--json").stdout)
    missing = data["feeds"][-1]
    assert (missing["last_status"], missing["consecutive_errors"]) == ("error", 1)
    assert missing["last_error"] == "file not found"


def test_fetch_one_feed_with_json(examples: Path, db_url: str) -> None:
    result = _run(examples, db_url, "fetch", "--feed", SAMPLE_FEEDS[0], "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [f["name"] for f in data["feeds"]] == [SAMPLE_FEEDS[0]]
    assert data["totals"] == {"feeds": 1, "new": 8, "updated": 0, "unchanged": 0, "failed": 0}


def test_fetch_unknown_feed_is_a_usage_error(
    examples: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", f"sqlite:///{examples.parent / 'x.db'}")
    with pytest.raises(SystemExit) as exc:
        main(["--config", str(examples), "fetch", "--feed", "nope"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {examples}: --feed: no feed named 'nope' (configured: ")


def test_init_writes_a_working_directory(tmp_path: Path) -> None:
    target = tmp_path / "digest"
    result = CliRunner().invoke(cli, ["init", str(target)])
    assert result.exit_code == 0, result.output
    assert f"next: cd {target}" in result.stdout

    settings = load_settings(target / "newsletter.toml", env={})
    assert [f.name for f in settings.feeds] == list(SAMPLE_FEEDS)
    assert all(Path(f.url).is_file() for f in settings.feeds)
    assert settings.database.url == f"sqlite:///{target / 'newsletter.db'}"
    assert settings.newsletter.subscribers_dir == target / "subscribers"
    assert settings.newsletter.templates_dir == target / "templates"
    assert (target / "templates").is_dir()
    bundled = sorted(
        p.relative_to(ROOT / "templates") for p in (ROOT / "templates").rglob("*") if p.is_file()
    )
    copied = sorted(
        p.relative_to(target / "templates")
        for p in (target / "templates").rglob("*")
        if p.is_file()
    )
    assert copied == bundled

    ada = yaml.safe_load((target / "subscribers" / "ada.yaml").read_text(encoding="utf-8"))
    assert ada["email"] == "ada@example.org"
    assert {"term": "RLHF", "weight": 2} in ada["keywords"]

    fetched = CliRunner().invoke(cli, ["--config", str(target / "newsletter.toml"), "fetch"])
    assert fetched.exit_code == 0, fetched.output
    assert "147 new" in fetched.stdout.splitlines()[-1]
    assert (target / "newsletter.db").is_file()

    # The demo sends nothing, so the development base_url is fine; switching to SMTP
    # alone is refused with the key to fix, as the config's comment says.
    assert settings.newsletter.delivery == "preview"
    check_base_url_for_smtp(settings)
    text = (target / "newsletter.toml").read_text(encoding="utf-8")
    assert "allow_insecure_base_url = true" in text
    smtp = load_settings(target / "newsletter.toml", env={"NEWSLETTER_DELIVERY": "smtp"})
    with pytest.raises(ConfigError, match=r"newsletter\.base_url: SMTP delivery would mail"):
        check_base_url_for_smtp(smtp)


def test_init_refuses_to_overwrite_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "digest"
    target.mkdir()
    (target / "newsletter.toml").write_text("# mine\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exc:
        main(["init", str(target)])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err == f"error: {target / 'newsletter.toml'} already exists (use --force to overwrite)\n"
    assert (target / "newsletter.toml").read_text(encoding="utf-8") == "# mine\n"
    assert not (target / "subscribers").exists()  # nothing written at all

    result = CliRunner().invoke(cli, ["init", "--force", str(target)])
    assert result.exit_code == 0, result.output
    assert "[[feeds]]" in (target / "newsletter.toml").read_text(encoding="utf-8")


def test_every_command_has_one_line_help() -> None:
    for name in ("init", "fetch", "status"):
        command = load_command(name)
        assert command.help and "\n" not in command.help.strip()
