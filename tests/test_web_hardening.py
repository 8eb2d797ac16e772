"""The web app against hostile requests: what it logs, what it redirects, what it allows."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, insert, select, text

from newsletter.config import settings_from_mapping
from newsletter.db import connect, session_scope, upgrade
from newsletter.models import Subscriber, Suppression
from newsletter.tokens import make_token
from newsletter.web import create_app
from newsletter.web.logsafe import escape_control, token_id

SECRET = b"web-hardening-secret-0123456789ab"
LIST_ID = "digest.test.example"
ONE_CLICK = {"List-Unsubscribe": "One-Click"}


@pytest.fixture
def app(engine: Engine) -> Flask:
    settings = settings_from_mapping(
        {"newsletter": {"list_id": LIST_ID, "base_url": "https://news.example.org"}}, env={}
    )
    return create_app(settings, engine, testing=True, secret=SECRET)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def _token(engine: Engine, email: str = "ada@example.org") -> str:
    with session_scope(engine) as s:
        sub = Subscriber(email=email, name="Ada", profile={})
        s.add(sub)
        s.flush()
        return make_token(
            SECRET,
            subscriber_id=sub.id,
            list_id=LIST_ID,
            version=sub.token_version,
            salt=sub.token_salt,
        )


def test_405_names_the_allowed_methods(client: FlaskClient, engine: Engine) -> None:
    token = _token(engine)
    r = client.delete(f"/unsubscribe/{token}")
    assert r.status_code == 405
    assert set(r.headers["Allow"].split(", ")) >= {"GET", "HEAD", "POST"}
    r = client.get(f"/resubscribe/{token}")
    assert r.status_code == 405 and "POST" in r.headers["Allow"]
    assert r.content_type.startswith("text/html")  # still our friendly page


def test_double_slash_does_not_redirect_to_the_client_host(
    client: FlaskClient, engine: Engine
) -> None:
    token = _token(engine)
    for path in (f"/unsubscribe//{token}", f"//unsubscribe/{token}"):
        r = client.get(path, headers={"Host": "evil.example"})
        assert r.status_code == 404, (path, r.status_code, r.headers.get("Location"))
        assert "Location" not in r.headers
        assert token not in r.text


def test_rejected_link_logs_route_and_token_id_not_the_token(
    client: FlaskClient, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    token = _token(engine)
    caplog.set_level(logging.INFO, logger="newsletter.web")
    r = client.post(f"/unsubscribe/{token}", data={"form_key": "forged"})
    assert r.status_code == 400
    lines = [rec.getMessage() for rec in caplog.records if "rejected link" in rec.getMessage()]
    assert len(lines) == 1
    assert token not in caplog.text
    assert "POST /unsubscribe/<token>" in lines[0]
    assert f"token={token_id(token)}" in lines[0]


def test_newline_in_a_path_cannot_forge_a_log_line(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="newsletter.web")
    forged = "x%0a2026-01-01 00:00:00 INFO newsletter.web.routes: subscriber 1 unsubscribed"
    r = client.get(f"/unsubscribe/{forged}")
    assert r.status_code == 400
    assert caplog.records, "the rejection is logged"
    for rec in caplog.records:
        assert "\n" not in rec.getMessage() and "\r" not in rec.getMessage()
    assert "subscriber 1 unsubscribed" not in caplog.text


def test_web_loggers_escape_control_characters(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="newsletter.web")
    logging.getLogger("newsletter.web.routes").info("value %s", "a\nb\rc\x1b[31m")
    assert [r.getMessage() for r in caplog.records] == ["value a\\x0ab\\x0dc\\x1b[31m"]
    assert escape_control("tab\there") == "tab\\x09here"
    assert "\u2028" not in escape_control("line\u2028separator")


def test_old_links_do_not_open_a_rebuilt_database(engine: Engine, tmp_path: Path) -> None:
    """Same secret, database rebuilt from scratch: subscriber 1 is someone else now."""
    old_token = _token(engine)  # ada, id 1, in the first database
    rebuilt = connect(f"sqlite:///{tmp_path / 'rebuilt.db'}")
    try:
        with session_scope(rebuilt) as s:
            s.add(Subscriber(email="bob@example.org", name="Bob", profile={}))
        with session_scope(rebuilt) as s:
            bob = s.scalars(select(Subscriber)).one()
            assert bob.id == 1 and bob.token_version == 1  # what the old token names
        settings = settings_from_mapping({"newsletter": {"list_id": LIST_ID}}, env={})
        client = create_app(settings, rebuilt, testing=True, secret=SECRET).test_client()
        assert client.post(f"/unsubscribe/{old_token}", data=ONE_CLICK).status_code == 400
        assert client.get(f"/preferences/{old_token}").status_code == 400
        with session_scope(rebuilt) as s:
            assert s.scalars(select(Suppression)).all() == []
        fresh = _token(rebuilt, email="carol@example.org")
        assert client.post(f"/unsubscribe/{fresh}", data=ONE_CLICK).status_code == 200
    finally:
        rebuilt.dispose()


def test_migration_backfills_a_random_salt_per_row(db_url: str) -> None:
    eng = connect(db_url, migrate=False)
    try:
        upgrade(eng, "0002")
        with eng.begin() as conn:
            for i in range(3):
                conn.execute(
                    text(
                        "INSERT INTO subscribers (email, profile, frequency, weekday, active,"
                        " token_version, created_at, updated_at) VALUES (:e, '{}', 'daily', 0,"
                        " :t, 1, :now, :now)"
                    ),
                    {"e": f"s{i}@example.org", "t": True, "now": datetime(2026, 1, 1)},
                )
        upgrade(eng)
        with eng.connect() as conn:
            salts = conn.execute(text("SELECT token_salt FROM subscribers")).scalars().all()
        assert len(salts) == 3 and len(set(salts)) == 3
        assert all(len(salt) == 32 and int(salt, 16) >= 0 for salt in salts)
    finally:
        eng.dispose()


def test_bulk_inserted_subscribers_each_get_their_own_salt(engine: Engine) -> None:
    """``subscribers sync`` inserts in bulk: the column default still runs per row."""
    with session_scope(engine) as s:
        s.execute(
            insert(Subscriber), [{"email": f"u{i}@example.org", "profile": {}} for i in range(5)]
        )
    with session_scope(engine) as s:
        salts = s.scalars(select(Subscriber.token_salt)).all()
    assert len(set(salts)) == 5 and all(len(salt) == 32 for salt in salts)


def test_forged_token_opening_to_a_huge_id_is_400_not_503(client: FlaskClient) -> None:
    """The id comes out of decryption before the signature is checked: it can be anything."""
    forged = make_token(
        b"not-the-site-secret-0123456789", subscriber_id=2**63, list_id=LIST_ID, version=1, salt="x"
    )
    for token in (forged, "A" + forged[1:]):
        assert client.get(f"/unsubscribe/{token}").status_code == 400
        assert client.post(f"/unsubscribe/{token}", data=ONE_CLICK).status_code == 400
