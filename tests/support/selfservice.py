"""A self-service world for the web tests: a config, an operator profile, the app."""

from __future__ import annotations

import email
import re
import tomllib
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine

from newsletter.cli import cli
from newsletter.config import Settings, settings_from_mapping
from newsletter.web import create_app
from tests.support.subscribers import write_profile

SECRET = b"subscribe-test-secret-0123456789"
LIST_ID = "digest.test.example"


@dataclass
class World:
    root: Path
    settings: Settings
    engine: Engine
    client: FlaskClient
    app: Flask

    @property
    def subscribers(self) -> Path:
        return self.settings.newsletter.subscribers_dir

    @property
    def self_service(self) -> Path:
        return self.subscribers / "self-service"

    def mails(self) -> list[Message]:
        sent = self.settings.newsletter.outbox_dir / "sent"
        return [email.message_from_bytes(p.read_bytes()) for p in sorted(sent.rglob("*.eml"))]

    def mail_to(self, address: str) -> Message:
        found = [m for m in self.mails() if m["To"] == address]
        assert len(found) == 1, f"expected one mail to {address}, got {len(found)}"
        return found[0]

    def cli(self, *args: str) -> str:
        r = CliRunner().invoke(cli, ["--config", str(self.root / "newsletter.toml"), *args])
        assert r.exit_code == 0, r.output
        return r.output


def _config(root: Path, db_url: str, extra: str = "") -> str:
    return (
        f'[database]\nurl = "{db_url}"\n\n[newsletter]\nsubscribers_dir = "subscribers"\n'
        f'outbox_dir = "outbox"\nlist_id = "{LIST_ID}"\nlist_name = "Test Digest"\n'
        f'base_url = "http://digest.test"\n\n[subscribe]\n{extra}'
    )


def make_world(tmp_path: Path, db_url: str, engine: Engine, extra: str = "") -> World:
    tmp_path.mkdir(parents=True, exist_ok=True)
    text = _config(tmp_path, db_url, extra)
    (tmp_path / "newsletter.toml").write_text(text, encoding="utf-8")
    write_profile(
        tmp_path / "subscribers",
        "ops.yaml",
        "# the operator's own file\nemail: ops@example.org\nkeywords: [graph neural network]\n",
    )
    settings = settings_from_mapping(tomllib.loads(text), base_dir=tmp_path, env={})
    app = create_app(settings, engine, testing=True, secret=SECRET)
    return World(tmp_path, settings, engine, app.test_client(), app)


FORM = {
    "email": "Grace@Example.org",
    "name": "Grace",
    "keywords": 'diffusion model\ntitle: protein folding\n"BERT"\nretrieval ^2',
    "frequency": "daily",
    "send_time": "08:15",
    "timezone": "Europe/Berlin",
}


def confirm_link(mail: Message) -> str:
    body = mail.get_payload(decode=True)
    assert isinstance(body, bytes)
    m = re.search(r"http://digest\.test(/subscribe/confirm/[A-Za-z0-9_-]+)", body.decode())
    assert m, body
    return m.group(1)


def subscribe_and_confirm(world: World, **form: str) -> str:
    """Go through the form and the confirmation; the preferences path of the result."""
    data = {**FORM, **form}
    assert world.client.post("/subscribe", data=data).status_code == 200
    address = data["email"].strip().lower()
    done = world.client.post(confirm_link(world.mail_to(address)))
    assert done.status_code == 200, done.text
    m = re.search(r'href="(/preferences/[^"]+)"', done.text)
    assert m
    return m.group(1)
