"""A sample installation for the unsubscribe tests: the bundled feeds fetched, the
sample profiles synced from YAML, and digests rendered by ``newsletter preview`` — so the
links the tests follow come from real emails, through the real commands."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email import policy as email_policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result
from sqlalchemy import Engine, update

from newsletter.cli import cli
from newsletter.db import session_scope
from newsletter.models import Entry

ROOT = Path(__file__).resolve().parent.parent.parent
SECRET = "unsubscribe-test-secret-0123456789abcdef"
PROFILES = ("ada", "grace")


class SampleSite:
    """A config dir with feeds, profiles and a database; run commands against it."""

    def __init__(self, directory: Path, config: Path) -> None:
        self.directory = directory
        self.config = config
        self.previews = 0
        self.preview_dir = directory / "preview-0"

    def invoke(self, *args: str) -> Result:
        result = CliRunner().invoke(
            cli, ["--config", str(self.config), *args], env={"NEWSLETTER_SECRET_KEY": SECRET}
        )
        assert result.exception is None or isinstance(result.exception, SystemExit), result.output
        return result

    def preview(self) -> dict[str, EmailMessage]:
        """Render today's digests with ``newsletter preview``: {address: message}.

        The files (``.html``, ``.txt``, ``.eml``) stay in ``preview_dir``."""
        self.previews += 1
        out = self.directory / f"preview-{self.previews}"  # fresh: no files of earlier runs
        self.preview_dir = out
        result = self.invoke("preview", "--out", str(out))
        assert result.exit_code == 0, result.output
        emails: dict[str, EmailMessage] = {}
        for eml in sorted(out.rglob("*.eml")):
            msg = message_from_bytes(eml.read_bytes(), policy=email_policy.default)
            assert isinstance(msg, EmailMessage)
            emails[msg["To"].addresses[0].addr_spec] = msg
        return emails


def make_sample_site(
    directory: Path,
    engine: Engine,
    db_url: str,
    *,
    base_url: str = "https://news.example.org/digest",
    smtp: dict[str, Any] | None = None,
) -> SampleSite:
    """Fetch the bundled feeds (seen an hour ago) and sync the sample profiles."""
    shutil.copytree(ROOT / "examples" / "feeds", directory / "feeds")
    (directory / "subscribers").mkdir()
    for name in PROFILES:
        shutil.copy(ROOT / "subscribers" / f"{name}.yaml", directory / "subscribers")
    lines = [
        "[database]",
        f"url = {json.dumps(db_url)}",
        "[newsletter]",
        'from = "Research Digest <digest@example.org>"',
        f"base_url = {json.dumps(base_url)}",
        'unsubscribe_mailto = "unsubscribe@example.org"',
        f'delivery = "{"smtp" if smtp else "preview"}"',
    ]
    if smtp:
        lines.append("[smtp]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in smtp.items()]
    for i in range(3):
        lines += ["[[feeds]]", f'name = "sample-{i}"', f'url = "feeds/daily-papers-00{i}.atom"']
    config = directory / "newsletter.toml"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    site = SampleSite(directory, config)
    assert site.invoke("fetch").exit_code == 0
    with session_scope(engine) as s:
        s.execute(update(Entry).values(first_seen_at=datetime.now(UTC) - timedelta(hours=1)))
    synced = site.invoke("subscribers", "sync")
    assert synced.exit_code == 0, synced.output
    return site


def list_unsubscribe_urls(msg: EmailMessage) -> list[str]:
    """The targets of a ``List-Unsubscribe`` header, in order."""
    return [part.strip().strip("<>") for part in str(msg["List-Unsubscribe"]).split(",")]
