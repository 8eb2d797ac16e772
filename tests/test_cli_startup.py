"""The CLI loads each command's module only when that command runs (issue: start-up time).

Speed itself is measured by ``benchmarks/cli_startup.py``; these tests check the
structure that makes it fast, and that lazy loading changes nothing a user sees.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from newsletter.cli import COMMANDS, cli, load_command

HEAVY = ("sqlalchemy", "alembic", "jinja2", "premailer", "flask", "werkzeug", "rich")


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport json, sys; print(json.dumps(sorted(sys.modules)))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {name.split(".")[0] for name in json.loads(out.splitlines()[-1])}


def test_importing_the_cli_imports_no_heavy_library() -> None:
    loaded = _modules_after("import newsletter.cli")
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


def test_help_loads_no_command_module() -> None:
    code = (
        "from newsletter.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "import sys; assert not [m for m in sys.modules if m.startswith('newsletter.cli.')"
        " and m != 'newsletter.cli.context'], sorted(sys.modules)\n"
    )
    loaded = _modules_after(code)
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_registry_help_is_the_commands_own(name: str) -> None:
    """``--help`` shows the registry's line without importing; it must not drift."""
    command = load_command(name)
    assert command.name == name
    for limit in (45, 200):
        expected = command.get_short_help_str(limit)
        assert click.Command(name, help=COMMANDS[name][1]).get_short_help_str(limit) == expected


def test_help_lists_every_command_with_its_line() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    listed = result.stdout.split("Commands:")[1]
    for name in COMMANDS:
        assert f"  {name} " in listed
    assert "Deliver the digests that are due now." in listed


def test_subcommand_help_and_unknown_command() -> None:
    runner = CliRunner()
    sub = runner.invoke(cli, ["subscribers", "--help"])
    assert sub.exit_code == 0 and "sync" in sub.stdout
    unknown = runner.invoke(cli, ["statsu"])
    assert unknown.exit_code == 2 and "No such command 'statsu'" in unknown.output


def test_status_on_sqlite_loads_no_postgresql_dialect(tmp_path: Path) -> None:
    """SQLAlchemy's PostgreSQL dialect (and asyncpg's module with it) is imported where
    an insert for it is built, not by every command that touches ``newsletter.db``."""
    folder = tmp_path / "d"
    for args in (
        ["init", str(folder)],
        ["--config", str(folder / "newsletter.toml"), "db", "upgrade"],
    ):
        subprocess.run([sys.executable, "-m", "newsletter", *args], check=True, capture_output=True)
    code = (
        "import sys\nfrom newsletter.cli import main\n"
        "try:\n    main(['status'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if 'dialects.postgresql' in m))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=folder, check=True, capture_output=True, text=True
    ).stdout
    assert "Feeds" in out
    assert out.splitlines()[-1] == "[]", out
