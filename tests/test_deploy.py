"""The files in ``deploy/`` are read and run by users: lint what can be linted here."""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from newsletter.config import settings_from_mapping

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNITS = [
    "newsletter.service",
    "newsletter-once.service",
    "newsletter-once.timer",
    "newsletter-worker.service",
]


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_systemd_units_verify(tmp_path: Path) -> None:
    # verify checks that ExecStart exists; the venv path only exists on a real install.
    for name in UNITS:
        text = (DEPLOY / name).read_text()
        assert "/opt/newsletter/venv/bin/newsletter" in text or name.endswith(".timer")
        (tmp_path / name).write_text(
            text.replace("/opt/newsletter/venv/bin/newsletter", "/bin/true")
        )
    proc = subprocess.run(
        ["systemd-analyze", "verify", *UNITS], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr


def test_units_run_the_right_commands() -> None:
    service = (DEPLOY / "newsletter.service").read_text()
    once = (DEPLOY / "newsletter-once.service").read_text()
    timer = (DEPLOY / "newsletter-once.timer").read_text()
    assert "ExecStart=/opt/newsletter/venv/bin/newsletter run\n" in service
    assert "KillSignal=SIGTERM" in service and "Restart=on-failure" in service
    assert "Type=oneshot" in once and "newsletter run --once" in once
    assert "Unit=newsletter-once.service" in timer and "Persistent=true" in timer
    worker = (DEPLOY / "newsletter-worker.service").read_text()
    assert "ExecStart=/opt/newsletter/venv/bin/newsletter worker" in worker
    assert "KillSignal=SIGTERM" in worker and "Restart=on-failure" in worker


def _compose_command() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


@pytest.mark.skipif(_compose_command() is None, reason="neither docker compose nor docker-compose")
def test_docker_compose_file_is_valid() -> None:
    cmd = _compose_command()
    assert cmd is not None
    env = {**os.environ, "NEWSLETTER_SECRET_KEY": "test-key"}
    proc = subprocess.run(
        [*cmd, "-f", "docker-compose.yml", "config", "-q"],
        cwd=DEPLOY,
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    # Without the secret the file refuses to start rather than run with no key.
    env.pop("NEWSLETTER_SECRET_KEY")
    proc = subprocess.run(
        [*cmd, "-f", "docker-compose.yml", "config", "-q"],
        cwd=DEPLOY,
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode != 0 and "NEWSLETTER_SECRET_KEY" in proc.stderr


def test_docker_config_is_a_valid_newsletter_config() -> None:
    data = tomllib.loads((DEPLOY / "newsletter.docker.toml").read_text())
    settings = settings_from_mapping(data, base_dir=Path("/data"))
    assert settings.newsletter.delivery == "smtp"
    assert settings.smtp.host == "mailpit" and settings.smtp.port == 1025
    # The feeds it names are the bundled Daily Papers JSON the Dockerfile copies in, as
    # in the sample configuration.
    sample = settings_from_mapping(
        tomllib.loads((ROOT / "examples" / "newsletter.toml").read_text()),
        base_dir=ROOT / "examples",
    )
    assert settings.feeds and len(settings.feeds) == len(sample.feeds)
    for feed, same in zip(settings.feeds, sample.feeds, strict=True):
        assert (feed.name, feed.type, feed.noun) == (same.name, "hf-daily-papers", same.noun)
        assert feed.url.startswith("/opt/newsletter/examples/hf-api/")
        assert Path(feed.url).name == Path(same.url).name
        assert (ROOT / "examples" / "hf-api" / Path(feed.url).name).is_file()
    assert settings.newsletter.popularity_weight == sample.newsletter.popularity_weight


def test_dockerfile_copies_what_the_build_needs() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    for src in ("pyproject.toml", "README.md", "newsletter", "templates", "examples"):
        assert (ROOT / src).exists()
        assert f"COPY {src}" in text or "COPY pyproject.toml README.md" in text
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    for src in ("pyproject.toml", "README.md", "newsletter/", "templates/", "examples/"):
        assert f"!{src}" in ignore
    assert 'CMD ["newsletter", "run"]' in text
