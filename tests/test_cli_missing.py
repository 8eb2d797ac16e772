"""Without a config file, or with a database that does not exist, commands say so and
create nothing (the operator forgot ``cd mydigest`` or mistyped a SQLite path)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from newsletter.cli import cli

ROOT = Path(__file__).resolve().parent.parent

NEEDS_CONFIG = [
    ["status"],
    ["fetch"],
    ["send"],
    ["send", "--dry-run"],
    ["run", "--once"],
    ["preview"],
    ["match", "--subscriber", "a@example.org"],
    ["subscribers", "sync"],
    ["subscribers", "list"],
    ["db", "upgrade"],
    ["db", "current"],
    ["serve"],
]


def _run(args: list[str], env: dict[str, str | None] | None = None) -> Result:
    base: dict[str, str | None] = {"NEWSLETTER_CONFIG": None, "NEWSLETTER_DATABASE_URL": None}
    return CliRunner().invoke(cli, args, env={**base, **(env or {})})


@pytest.mark.parametrize("args", NEEDS_CONFIG, ids=" ".join)
def test_without_a_config_every_command_says_so_and_creates_nothing(
    args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = _run(args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: no config file found"), result.stderr
    assert "newsletter init" in result.stderr and "--config" in result.stderr
    assert result.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_init_needs_no_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = _run(["init", "digest"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "digest" / "newsletter.toml").is_file()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    return tmp_path / "examples" / "newsletter.toml"


READERS = [
    ["status"],
    ["status", "--json"],
    ["match", "--subscriber", "a@example.org"],
    ["subscribers", "list"],
    ["subscribers", "list", "--unsubscribed"],
]


@pytest.mark.parametrize("args", READERS, ids=" ".join)
def test_reading_commands_never_create_a_database(
    args: list[str], config: Path, tmp_path: Path
) -> None:
    missing_dir = tmp_path / "nonexistent" / "dir"
    env = {"NEWSLETTER_DATABASE_URL": f"sqlite:///{missing_dir / 'x.db'}"}
    result = _run(["--config", str(config), *args], env)
    assert result.exit_code == 1, result.output
    assert "no database at" in result.stderr and "`newsletter db upgrade`" in result.stderr
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "nonexistent").exists()


@pytest.mark.parametrize("args", READERS, ids=" ".join)
def test_reading_commands_do_not_create_the_schema_either(
    args: list[str], config: Path, db_url: str
) -> None:
    result = _run(["--config", str(config), *args], {"NEWSLETTER_DATABASE_URL": db_url})
    assert result.exit_code == 1, result.output
    assert "no database at" in result.stderr and "newsletter db upgrade" in result.stderr
    upgraded = _run(["--config", str(config), "db", "upgrade"], {"NEWSLETTER_DATABASE_URL": db_url})
    assert upgraded.exit_code == 0
    assert "empty -> " in upgraded.stdout  # the reader left the database empty
