"""Configuration: defaults, paths, environment overrides, and one clear line per mistake."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from newsletter.cli import main
from newsletter.config import load_settings
from newsletter.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "newsletter.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _cli_error(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main([*args])
    err = capsys.readouterr().err
    return int(exc.value.code or 0), err


def test_only_feeds_is_a_working_config(tmp_path: Path) -> None:
    cfg = _write(tmp_path, '[[feeds]]\nname = "a"\nurl = "feeds/a.atom"\n')
    s = load_settings(cfg, env={})
    assert s.feeds[0].url == str(tmp_path / "feeds" / "a.atom")  # relative to the file
    assert s.database.url == f"sqlite:///{tmp_path / 'newsletter.db'}"
    assert s.fetch.workers == 4 and s.fetch.timeout_seconds == 20
    assert "newsletter/" in s.fetch.user_agent


def test_file_urls_and_http_urls(tmp_path: Path) -> None:
    cfg = _write(
        tmp_path,
        '[[feeds]]\nname = "local"\nurl = "file:///srv/feed.xml"\n'
        '[[feeds]]\nname = "web"\nurl = "https://example.org/feed"\nenabled = false\n',
    )
    local, web = load_settings(cfg, env={}).feeds
    assert local.url == "/srv/feed.xml" and not local.is_remote
    assert web.url == "https://example.org/feed" and web.is_remote and not web.enabled


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    cfg = _write(tmp_path, '[fetch]\nworkers = 2\n[database]\nurl = "sqlite:///a.db"\n')
    env = {"NEWSLETTER_FETCH_WORKERS": "8", "NEWSLETTER_DATABASE_URL": "sqlite:////tmp/x.db"}
    s = load_settings(cfg, env=env)
    assert (s.fetch.workers, s.database.url) == (8, "sqlite:////tmp/x.db")


def test_config_from_environment_variable(tmp_path: Path) -> None:
    cfg = _write(tmp_path, "[fetch]\nworkers = 3\n")
    assert load_settings(env={"NEWSLETTER_CONFIG": str(cfg)}).fetch.workers == 3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[fetch]\nworkerz = 2\n", "[fetch]: unknown key 'workerz' (did you mean 'workers'?)"),
        ('[smtp]\nhots = "x"\n', "[smtp]: unknown key 'hots' (did you mean 'host'?)"),
        ('[fetch]\nworkers = "four"\n', "fetch.workers: expected an integer, got 'four'"),
        ("[fetch]\ntimeout_seconds = true\n", "fetch.timeout_seconds: expected a number"),
        ("[fetch]\nworkers = 0\n", "fetch.workers: expected a positive number"),
        ("[feedz]\n", "unknown section 'feedz' (did you mean 'feeds'?)"),
        ('[[feeds]]\nname = "a"\n', "feeds[1].url: expected a non-empty string"),
        (
            '[[feeds]]\nname = "a"\nurl = "ftp://x/y"\n',
            "feeds[1].url: expected an http(s):// URL or a file path",
        ),
        (
            '[[feeds]]\nname = "a"\nurl = "a.xml"\n[[feeds]]\nname = "b"\nurl = "b.xml"\n'
            '[[feeds]]\nname = "a"\nurl = "c.xml"\n',
            "feeds.name: duplicate feed name 'a' in [[feeds]] #1 and [[feeds]] #3",
        ),
        ("[fetch\nworkers = 2\n", "invalid TOML"),
    ],
)
def test_bad_config_is_one_line_naming_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    cfg = _write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_settings(cfg, env={})
    assert str(exc.value).startswith(f"{cfg}: ")
    assert expected in str(exc.value)

    code, err = _cli_error(capsys, "--config", str(cfg), "status")
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"error: {cfg}: ")
    assert expected in err


@pytest.mark.parametrize(
    ("var", "hint"),
    [
        ("NEWSLETTER_SMTP_HOTS", "(did you mean 'NEWSLETTER_SMTP_HOST'?)"),
        ("NEWSLETTER_DELIVER", "(did you mean 'NEWSLETTER_DELIVERY'?)"),
        ("NEWSLETTER_ZZZ", ""),
    ],
)
def test_unknown_environment_variable_is_an_error(tmp_path: Path, var: str, hint: str) -> None:
    cfg = _write(tmp_path, "[fetch]\nworkers = 3\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(cfg, env={var: "x"})
    assert str(exc.value).startswith(f"environment: unknown variable {var!r}")
    assert hint in str(exc.value)
    assert hint or "did you mean" not in str(exc.value)


def test_environment_names_that_are_not_settings_are_allowed(tmp_path: Path) -> None:
    cfg = _write(tmp_path, '[smtp]\npassword_env = "NEWSLETTER_RELAY_PW"\n')
    env = {
        "NEWSLETTER_CONFIG": str(cfg),
        "NEWSLETTER_SECRET_KEY": "k" * 40,
        "NEWSLETTER_RELAY_PW": "pw",
        "NEWSLETTER_TEST_POSTGRES_URL": "postgresql://x",
        "NEWSLETTER_NOW": "2026-03-02T07:00:00+00:00",
        "NEWSLETTER_SMTP_HOST": "relay.example.org",
    }
    assert load_settings(env=env).smtp.host == "relay.example.org"


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.toml"
    code, err = _cli_error(capsys, "--config", str(missing), "fetch")
    assert (code, err) == (2, f"error: {missing}: config file not found\n")


def test_wrong_type_in_environment_names_the_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _write(tmp_path, "")
    monkeypatch.setenv("NEWSLETTER_FETCH_WORKERS", "many")
    code, err = _cli_error(capsys, "--config", str(cfg), "fetch")
    assert code == 2
    assert err == "error: environment: NEWSLETTER_FETCH_WORKERS: expected an integer, got 'many'\n"


def test_bad_config_exit_code_from_a_real_process(tmp_path: Path) -> None:
    cfg = _write(tmp_path, "[database]\nurl = 5\n")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "newsletter", "--config", str(cfg), "status"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr == f"error: {cfg}: database.url: expected a string, got 5\n"
    assert "Traceback" not in proc.stderr and proc.stdout == ""
