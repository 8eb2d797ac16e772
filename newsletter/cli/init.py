"""``newsletter init``: set up a directory with a config, sample feeds and a profile."""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import click

from newsletter.config import bundled_dir
from newsletter.errors import NewsletterError

SAMPLE_SUBSCRIBER = """\
# A subscriber profile: one YAML file per subscriber (or a list of them in one file).
# Edit it, then run `newsletter subscribers sync`.
email: ada@example.org
name: Ada Lovelace            # optional
keywords:                     # an entry matching any keyword qualifies
  - bilevel optimization
  - preference optimization
  - term: RLHF
    weight: 2                 # optional, default 1
exclude:                      # an entry matching any of these is never sent
  - survey
max_items: 10                 # optional, default from the config
frequency: daily              # daily | weekly (weekly sends on `weekday`, default monday)
send_time: "07:30"            # optional, local time in `timezone`
timezone: Europe/Berlin       # optional IANA name
active: true
"""


CONFIG_HEAD = """\
# newsletter configuration, written by `newsletter init`.
# Every key has a default (see "Configuration" in the README); relative paths are
# relative to this file. Environment variables NEWSLETTER_<SECTION>_<KEY> override it.

[database]
# Any SQLAlchemy URL, e.g. "postgresql+psycopg://user@localhost/newsletter".
url = "sqlite:///newsletter.db"

[newsletter]
subscribers_dir = "subscribers"      # one YAML profile per subscriber
templates_dir = "templates"          # your copies; files here override the bundled ones
outbox_dir = "outbox"                # where preview mode writes the emails
from = "Research Digest <digest@example.org>"
base_url = "http://127.0.0.1:8000"   # public URL of `newsletter serve` (unsubscribe links)
delivery = "preview"                 # "preview" writes emails to the outbox, "smtp" sends
# "smtp" needs base_url to be the public https:// address: a loopback or plain-http one is
# refused unless allow_insecure_base_url = true (e.g. a local mail catcher).
timezone = "UTC"                     # default for subscribers without one
send_time = "07:00"

# [smtp]
# host = "smtp.example.org"
# port = 587
# starttls = true
# username = "digest@example.org"
# password_env = "NEWSLETTER_SMTP_PASSWORD"   # names the variable; never the password

[fetch]
timeout_seconds = 20
workers = 4

# Feeds: an http(s):// URL or a file path. The samples are three days of Hugging Face
# Daily Papers as the API's JSON (type "hf-daily-papers"; a file is read as today's
# listing). Add your own, e.g.:
# [[feeds]]
# name = "arxiv-cs-lg"
# url = "https://rss.arxiv.org/rss/cs.LG"
"""


def _sample_feeds() -> list[tuple[str, Path, str]]:
    """(name, file, type) of the bundled sample feeds, as in the bundled config."""
    examples = bundled_dir("examples")
    try:
        data = tomllib.loads((examples / "newsletter.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise NewsletterError(f"the bundled sample config is unreadable: {e}") from e
    out = []
    for item in data.get("feeds", []):
        path = (examples / item["url"]).resolve()
        if path.is_file():
            out.append((item["name"], path, str(item.get("type", ""))))
    return out


def _config_text(feeds: list[tuple[str, Path, str]]) -> str:
    blocks = [
        f"\n[[feeds]]\nname = {json.dumps(name)}\n"
        + (f"type = {json.dumps(kind)}\n" if kind else "")
        + f'url = "feeds/{path.name}"\n'
        for name, path, kind in feeds
    ]
    return CONFIG_HEAD + "".join(blocks)


@click.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite files that already exist.")
def init_command(directory: Path, force: bool) -> None:
    """Write a working config, sample feeds, a sample subscriber and the templates."""
    feeds = _sample_feeds()
    plan: dict[Path, str | Path] = {directory / "newsletter.toml": _config_text(feeds)}
    for _, path, _kind in feeds:
        plan[directory / "feeds" / path.name] = path
    plan[directory / "subscribers" / "ada.yaml"] = SAMPLE_SUBSCRIBER
    templates = bundled_dir("templates")
    template_files = [
        p for p in sorted(templates.rglob("*")) if p.is_file() and "__pycache__" not in p.parts
    ]
    for src in template_files:
        plan[directory / "templates" / src.relative_to(templates)] = src
    existing = [p for p in plan if p.exists()]
    if existing and not force:
        shown = ", ".join(str(p) for p in existing[:3])
        more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        verb = "exists" if len(existing) == 1 else "exist"
        raise NewsletterError(f"{shown}{more} already {verb} (use --force to overwrite)")
    try:
        for dest, content in plan.items():
            dest.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, Path):
                shutil.copyfile(content, dest)
            else:
                dest.write_text(content, encoding="utf-8")
        (directory / "templates").mkdir(exist_ok=True)
    except OSError as e:
        raise NewsletterError(f"cannot write {directory}: {e.strerror or e}") from e
    click.echo(f"wrote {directory / 'newsletter.toml'}")
    click.echo(f"wrote {len(feeds)} sample feeds in {directory / 'feeds'}")
    click.echo(f"wrote {directory / 'subscribers' / 'ada.yaml'}")
    click.echo(f"wrote {len(template_files)} template files in {directory / 'templates'}")
    click.echo(
        f"next: cd {directory} && newsletter fetch && newsletter subscribers sync"
        " && newsletter preview"
    )
