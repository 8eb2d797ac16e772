"""The unsubscribe web app through Flask's test client and over real HTTP."""

from __future__ import annotations

import json
import queue
import re
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, create_engine, func, select, update

from newsletter.config import Settings, load_settings, settings_from_mapping
from newsletter.db import session_scope
from newsletter.db.subscriber_reads import load_profiles
from newsletter.db.suppressions import (
    get_suppression,
    is_suppressed,
    list_suppressions,
    suppress,
    unsuppress,
)
from newsletter.errors import ConfigError, DatabaseError
from newsletter.models import Subscriber, Suppression
from newsletter.tokens import form_key, make_token, secret_from_settings
from newsletter.web import create_app, create_wsgi_app, mask_email
from tests.support.http import serve_wsgi
from tests.support.sending import cli_env
from tests.support.smtp import SmtpTestServer
from tests.support.unsubscribe import SECRET as SAMPLE_SECRET
from tests.support.unsubscribe import SampleSite, list_unsubscribe_urls, make_sample_site

SECRET = b"web-test-secret-0123456789abcdef"
LIST_ID = "digest.test.example"
ONE_CLICK = {"List-Unsubscribe": "One-Click"}


def salt_of(engine: Engine, subscriber_id: int) -> str:
    """The stored ``token_salt`` a link for this subscriber is signed with."""
    with session_scope(engine) as s:
        sub = s.get(Subscriber, subscriber_id)
        return sub.token_salt if sub is not None else "no-such-row"


@dataclass
class Site:
    app: Flask
    client: FlaskClient
    engine: Engine
    settings: Settings

    def add_subscriber(
        self, email: str = "ada@example.org", *, name: str | None = "Ada", **profile: object
    ) -> int:
        with session_scope(self.engine) as s:
            sub = Subscriber(email=email, name=name, profile=dict(profile))
            s.add(sub)
            s.flush()
            return sub.id

    def token(self, subscriber_id: int, version: int = 1) -> str:
        return make_token(
            SECRET,
            subscriber_id=subscriber_id,
            list_id=LIST_ID,
            version=version,
            salt=salt_of(self.engine, subscriber_id),
        )

    def suppressions(self) -> list[tuple[str, str, int | None]]:
        with session_scope(self.engine) as s:
            rows = s.execute(
                select(Suppression.email, Suppression.source, Suppression.subscriber_id)
            )
            return [tuple(r) for r in rows]  # type: ignore[misc]

    @staticmethod
    def form_key(page_html: str, button_form: str) -> str:
        """The hidden ``form_key`` of the form posting to ``button_form`` on a page."""
        m = re.search(
            rf'<form method="post" action="([^"]*/{button_form}/[^"]+)">\s*'
            r'<input type="hidden" name="form_key" value="([^"]+)">',
            page_html,
        )
        assert m, f"no {button_form} form on the page"
        return m.group(2)


@pytest.fixture
def site(engine: Engine) -> Site:
    settings = settings_from_mapping(
        {"newsletter": {"list_id": LIST_ID, "list_name": "Test Digest"}}, env={}
    )
    app = create_app(settings, engine, testing=True, secret=SECRET)
    return Site(app=app, client=app.test_client(), engine=engine, settings=settings)


def test_get_page_shows_button_and_changes_nothing(site: Site) -> None:
    sid = site.add_subscriber()
    token = site.token(sid)
    for _ in range(3):  # a link scanner fetching the link again and again
        r = site.client.get(f"/unsubscribe/{token}")
        assert r.status_code == 200
        assert r.content_type.startswith("text/html")
        html = r.text
        assert f'<form method="post" action="/unsubscribe/{token}">' in html
        assert '<button type="submit" id="unsubscribe"' in html
        assert "a**@example.org" in html and "ada@example.org" not in html
        assert site.client.head(f"/unsubscribe/{token}").status_code == 200
        assert site.client.get(f"/preferences/{token}").status_code == 200
    assert site.suppressions() == []


def test_one_click_post_unsubscribes(site: Site) -> None:
    sid = site.add_subscriber()
    r = site.client.post(f"/unsubscribe/{site.token(sid)}", data=ONE_CLICK)
    assert r.status_code == 200
    assert r.content_type.startswith("text/plain")
    assert site.suppressions() == [("ada@example.org", "one-click", sid)]


def test_one_click_as_multipart(site: Site) -> None:
    """RFC 8058 says providers SHOULD send multipart/form-data; both encodings work."""
    sid = site.add_subscriber()
    r = site.client.post(
        f"/unsubscribe/{site.token(sid)}", data=ONE_CLICK, content_type="multipart/form-data"
    )
    assert r.status_code == 200
    assert site.suppressions() == [("ada@example.org", "one-click", sid)]


def test_page_post_confirms_and_offers_undo(site: Site) -> None:
    sid = site.add_subscriber()
    token = site.token(sid)
    page = site.client.get(f"/unsubscribe/{token}").text
    r = site.client.post(
        f"/unsubscribe/{token}", data={"form_key": site.form_key(page, "unsubscribe")}
    )
    assert r.status_code == 200
    assert 'id="confirmation"' in r.text and "You are unsubscribed" in r.text
    assert site.suppressions() == [("ada@example.org", "page", sid)]

    undo_key = site.form_key(r.text, "resubscribe")
    r = site.client.post(f"/resubscribe/{token}", data={"form_key": undo_key})
    assert r.status_code == 200
    assert 'id="resubscribed"' in r.text
    assert site.suppressions() == []
    # The page is back to its first state.
    assert 'id="unsubscribe"' in site.client.get(f"/unsubscribe/{token}").text


def test_get_after_unsubscribe_shows_state_with_undo(site: Site) -> None:
    sid = site.add_subscriber()
    token = site.token(sid)
    site.client.post(f"/unsubscribe/{token}", data=ONE_CLICK)
    html = site.client.get(f"/unsubscribe/{token}").text
    assert "You are already unsubscribed" in html
    assert 'id="resubscribe"' in html


def test_post_without_one_click_or_form_key_changes_nothing(site: Site) -> None:
    sid = site.add_subscriber()
    token = site.token(sid)
    for data in ({}, {"List-Unsubscribe": "yes"}, {"form_key": "forged"}):
        r = site.client.post(f"/unsubscribe/{token}", data=data)
        assert r.status_code == 400
        assert "This link is not valid" in r.text
    assert site.suppressions() == []


def test_form_key_of_another_subscriber_is_refused(site: Site) -> None:
    a = site.add_subscriber("ada@example.org")
    b = site.add_subscriber("bob@example.org", name="Bob")
    page_a = site.client.get(f"/unsubscribe/{site.token(a)}").text
    r = site.client.post(
        f"/unsubscribe/{site.token(b)}", data={"form_key": site.form_key(page_a, "unsubscribe")}
    )
    assert r.status_code == 400
    assert site.suppressions() == []


def test_tampered_token_is_400_and_changes_nothing(site: Site) -> None:
    sid = site.add_subscriber()
    token = site.token(sid)
    flipped = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
    for bad in (flipped, token[:-1], token + "A", "garbage", "A" * 39):
        r = site.client.get(f"/unsubscribe/{bad}")
        assert r.status_code == 400
        assert "This link is not valid" in r.text
        assert "Nothing was changed" in r.text
        r = site.client.post(f"/unsubscribe/{bad}", data=ONE_CLICK)
        assert r.status_code == 400
        assert r.content_type.startswith("text/plain")
        assert site.client.post(f"/resubscribe/{bad}").status_code == 400
        assert site.client.get(f"/preferences/{bad}").status_code == 400
    assert site.suppressions() == []


def test_token_signed_with_another_secret_or_list(site: Site) -> None:
    sid = site.add_subscriber()
    for token in (
        make_token(
            b"another-secret-0123456789abcdef",
            subscriber_id=sid,
            list_id=LIST_ID,
            version=1,
            salt=salt_of(site.engine, sid),
        ),
        make_token(
            SECRET,
            subscriber_id=sid,
            list_id="another.list",
            version=1,
            salt=salt_of(site.engine, sid),
        ),
    ):
        assert site.client.post(f"/unsubscribe/{token}", data=ONE_CLICK).status_code == 400
    assert site.suppressions() == []


def test_deleted_subscriber_is_400(site: Site) -> None:
    gone = site.add_subscriber("gone@example.org")
    removed = site.add_subscriber("removed@example.org")
    with session_scope(site.engine) as s:
        s.execute(
            update(Subscriber)
            .where(Subscriber.id == removed)
            .values(deleted_at=datetime(2026, 1, 1, tzinfo=UTC), active=False)
        )
        s.delete(s.get(Subscriber, gone))
    for sid in (gone, removed):
        token = site.token(sid)
        assert site.client.get(f"/unsubscribe/{token}").status_code == 400
        assert site.client.post(f"/unsubscribe/{token}", data=ONE_CLICK).status_code == 400
    assert site.suppressions() == []


def test_revoked_token_after_version_bump(site: Site) -> None:
    sid = site.add_subscriber()
    old = site.token(sid, version=1)
    with session_scope(site.engine) as s:
        s.execute(update(Subscriber).where(Subscriber.id == sid).values(token_version=2))
    assert site.client.get(f"/unsubscribe/{old}").status_code == 400
    assert site.client.post(f"/unsubscribe/{old}", data=ONE_CLICK).status_code == 400
    assert site.suppressions() == []
    new = site.token(sid, version=2)
    assert site.client.post(f"/unsubscribe/{new}", data=ONE_CLICK).status_code == 200
    assert site.suppressions() == [("ada@example.org", "one-click", sid)]


def test_repeated_post_is_idempotent(site: Site) -> None:
    sid = site.add_subscriber()
    token = site.token(sid)
    first = site.client.post(f"/unsubscribe/{token}", data=ONE_CLICK)
    with session_scope(site.engine) as s:
        when = s.scalar(select(Suppression.created_at))
    page = site.client.get(f"/unsubscribe/{token}").text
    assert 'id="unsubscribe"' not in page  # already unsubscribed: no second button
    for _ in range(3):
        r = site.client.post(f"/unsubscribe/{token}", data=ONE_CLICK)
        assert (r.status_code, r.text) == (first.status_code, first.text)
    with session_scope(site.engine) as s:
        assert s.scalar(select(Suppression.created_at)) == when
    assert site.suppressions() == [("ada@example.org", "one-click", sid)]


def test_operator_suppression_cannot_be_undone_from_the_web(site: Site) -> None:
    sid = site.add_subscriber()
    token = site.token(sid)
    with session_scope(site.engine) as s:
        suppress(s, email="ada@example.org", subscriber_id=sid, source="operator")
    page = site.client.get(f"/unsubscribe/{token}").text
    assert "already unsubscribed" in page and 'id="resubscribe"' not in page
    # Even with a valid undo key (from a page seen before the operator acted), it stays.
    key = form_key(SECRET, token, "resubscribe")
    r = site.client.post(f"/resubscribe/{token}", data={"form_key": key})
    assert r.status_code == 200 and "unsubscribed by the list operator" in r.text
    assert site.suppressions() == [("ada@example.org", "operator", sid)]


def test_resubscribe_needs_the_form_key(site: Site) -> None:
    sid = site.add_subscriber()
    token = site.token(sid)
    site.client.post(f"/unsubscribe/{token}", data=ONE_CLICK)
    assert site.client.post(f"/resubscribe/{token}").status_code == 400
    assert site.client.post(f"/resubscribe/{token}", data=ONE_CLICK).status_code == 400
    assert site.suppressions() == [("ada@example.org", "one-click", sid)]


def test_preferences_page_escapes_and_shows_keywords(site: Site) -> None:
    sid = site.add_subscriber(
        name="<b>Ada</b>",
        keywords=["bilevel optimization", {"term": "<script>alert(1)</script>", "weight": 2.0}],
        exclude=["survey"],
    )
    r = site.client.get(f"/preferences/{site.token(sid)}")
    assert r.status_code == 200
    assert "bilevel optimization" in r.text and "weight 2" in r.text and "survey" in r.text
    assert "<script>" not in r.text and "&lt;script&gt;" in r.text
    assert "<b>Ada</b>" not in r.text
    assert site.suppressions() == []


def test_security_headers(site: Site) -> None:
    sid = site.add_subscriber()
    r = site.client.get(f"/unsubscribe/{site.token(sid)}")
    assert r.headers["Referrer-Policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
    assert r.headers["Cache-Control"] == "no-store"
    assert "Set-Cookie" not in r.headers
    css = site.client.get("/style.css")
    assert css.status_code == 200 and css.content_type.startswith("text/css")


def test_healthz_and_404(site: Site) -> None:
    r = site.client.get("/healthz")
    assert (r.status_code, r.text) == (200, "ok\n")
    r = site.client.get("/nope")
    assert r.status_code == 404 and "Test Digest" in r.text
    assert site.client.get("/unsubscribe/").status_code == 404


def test_database_down_is_503_and_retryable(tmp_path: Path) -> None:
    """Providers retry a one-click POST answered with 503; nothing half-done."""
    broken = create_engine(f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}")
    settings = settings_from_mapping({"newsletter": {"list_id": LIST_ID}}, env={})
    client = create_app(settings, broken, secret=SECRET).test_client()
    token = make_token(SECRET, subscriber_id=1, list_id=LIST_ID, version=1, salt="x" * 32)
    r = client.post(f"/unsubscribe/{token}", data=ONE_CLICK)
    assert (r.status_code, r.text) == (503, "temporarily unavailable\n")
    assert r.headers["Retry-After"] == "120"
    r = client.get(f"/unsubscribe/{token}")
    assert r.status_code == 503 and "Nothing was changed" in r.text
    assert client.get("/healthz").status_code == 503


def test_suppression_queries(engine: Engine) -> None:
    when = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    many = [f"u{i}@example.org" for i in range(1200)]  # more than one IN (...) chunk
    with session_scope(engine) as s:
        assert suppress(s, email="a@example.org", subscriber_id=None, source="mailto", now=when)
        assert not suppress(s, email="a@example.org", subscriber_id=None, source="operator")
        for email in many[::100]:
            suppress(s, email=email, subscriber_id=None, source="operator", now=when)
    with session_scope(engine) as s:
        assert is_suppressed(s, "a@example.org") and not is_suppressed(s, "b@example.org")
        info = get_suppression(s, "a@example.org")
        assert info is not None and (info.source, info.created_at) == ("mailto", when)
        assert len(list_suppressions(s)) == 13
        with pytest.raises(ValueError, match="unknown suppression source"):
            suppress(s, email="c@example.org", subscriber_id=None, source="bounce")  # type: ignore[arg-type]
    with session_scope(engine) as s:
        assert not unsuppress(s, "a@example.org", sources=["page", "one-click"])
        assert unsuppress(s, "a@example.org")
        assert not unsuppress(s, "a@example.org")


def test_mask_email() -> None:
    assert mask_email("ada@example.org") == "a**@example.org"
    assert mask_email("lovelace@example.org") == "lo******@example.org"
    assert mask_email("a@x.org") == "a**@x.org"
    assert mask_email("nonsense") == "***"


# --- over real HTTP: concurrency -------------------------------------------------------


@pytest.fixture
def live(site: Site) -> Iterator[str]:
    """The app on a real threaded server at 127.0.0.1, on a free port."""
    with serve_wsgi(site.app) as url:
        yield url


def _post(url: str, data: dict[str, str]) -> tuple[int, str]:
    body = urllib.parse.urlencode(data).encode()
    req = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_concurrent_posts_record_one_suppression(site: Site, live: str) -> None:
    sid = site.add_subscriber()
    token = site.token(sid)
    page = site.client.get(f"/unsubscribe/{token}").text
    page_data = {"form_key": site.form_key(page, "unsubscribe")}
    n = 16
    barrier = threading.Barrier(n)

    def hit(i: int) -> tuple[int, str]:
        barrier.wait()
        return _post(f"{live}/unsubscribe/{token}", ONE_CLICK if i % 2 else page_data)

    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(hit, range(n)))
    assert [status for status, _ in results] == [200] * n
    rows = site.suppressions()
    assert len(rows) == 1
    assert rows[0][0] == "ada@example.org" and rows[0][1] in ("one-click", "page")
    with session_scope(site.engine) as s:
        assert s.scalar(select(func.count()).select_from(Suppression)) == 1


def test_concurrent_unsubscribes_of_many_subscribers(site: Site, live: str) -> None:
    ids = [site.add_subscriber(f"user{i}@example.org", name=None) for i in range(12)]
    barrier = threading.Barrier(len(ids) * 2)

    def hit(sid: int) -> int:
        barrier.wait()
        return _post(f"{live}/unsubscribe/{site.token(sid)}", ONE_CLICK)[0]

    with ThreadPoolExecutor(max_workers=len(ids) * 2) as pool:
        statuses = list(pool.map(hit, ids + ids))
    assert statuses == [200] * len(ids) * 2
    assert sorted(r[2] for r in site.suppressions()) == sorted(ids)


# --- production entry point and the serve command, as real processes -------------------

ROOT = Path(__file__).resolve().parent.parent


def _write_config(tmp_path: Path, db_url: str, **newsletter: str) -> Path:
    cfg = tmp_path / "newsletter.toml"
    lines = ["[database]", f"url = {json.dumps(db_url)}", "[newsletter]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in {"list_id": LIST_ID, **newsletter}.items()]
    cfg.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return cfg


class _Lines:
    """Lines of a child's stream, read by a thread, so a test can wait for one."""

    def __init__(self, stream: IO[str]) -> None:
        self.queue: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self.queue.put(line)

    def wait_for(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        while True:
            try:
                line = self.queue.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r} in {self.seen}") from None
            self.seen.append(line)
            if m := re.search(pattern, line):
                return m


def _add_subscriber(engine: Engine, email: str = "ada@example.org") -> int:
    with session_scope(engine) as s:
        sub = Subscriber(email=email, name="Ada", profile={})
        s.add(sub)
        s.flush()
        return sub.id


def test_gunicorn_serves_the_wsgi_factory(engine: Engine, db_url: str, tmp_path: Path) -> None:
    pytest.importorskip("gunicorn", reason="gunicorn is in the 'web' and 'dev' extras")
    sid = _add_subscriber(engine)
    secret = "gunicorn-test-secret-0123456789"
    token = make_token(
        secret.encode(),
        subscriber_id=sid,
        list_id=LIST_ID,
        version=1,
        salt=salt_of(engine, sid),
    )
    cfg = _write_config(tmp_path, db_url)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--threads",
            "4",
            "newsletter.web:create_wsgi_app(proxies=1)",
        ],
        cwd=tmp_path,
        env=cli_env(secret=secret, NEWSLETTER_CONFIG=str(cfg)),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        log = _Lines(proc.stderr)
        base = log.wait_for(r"Listening at: (http://127\.0\.0\.1:\d+)").group(1)
        log.wait_for(r"Booting worker")
        # Behind a reverse proxy that mounts the app under /newsletter.
        req = urllib.request.Request(
            f"{base}/unsubscribe/{token}", headers={"X-Forwarded-Prefix": "/newsletter"}
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            page = resp.read().decode()
        assert f'action="/newsletter/unsubscribe/{token}"' in page
        assert _post(f"{base}/unsubscribe/{token}", ONE_CLICK) == (200, "unsubscribed\n")
        with urllib.request.urlopen(f"{base}/healthz", timeout=30) as resp:
            assert resp.status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    with session_scope(engine) as s:
        assert s.scalar(select(Suppression.source)) == "one-click"


def test_wsgi_factory_requires_a_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sqlite_engine: Engine
) -> None:
    cfg = _write_config(tmp_path, str(sqlite_engine.url))
    monkeypatch.delenv("NEWSLETTER_SECRET_KEY", raising=False)
    with pytest.raises(ConfigError, match="NEWSLETTER_SECRET_KEY: not set"):
        create_wsgi_app(str(cfg))


def test_wsgi_factory_refuses_an_old_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _write_config(tmp_path, f"sqlite:///{tmp_path / 'empty.db'}")
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "k" * 32)
    with pytest.raises(DatabaseError, match="run `newsletter db upgrade` first"):
        create_wsgi_app(str(cfg))


def test_serve_command_in_preview_mode(engine: Engine, db_url: str, tmp_path: Path) -> None:
    """The offline demo: preview links (development key) work against ``serve``."""
    sid = _add_subscriber(engine)
    cfg = _write_config(tmp_path, db_url)
    settings = load_settings(cfg, env={})
    token = make_token(
        secret_from_settings(settings, env={}),
        subscriber_id=sid,
        list_id=LIST_ID,
        version=1,
        salt=salt_of(engine, sid),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "--config", str(cfg), "serve", "--port", "0"],
        cwd=tmp_path,
        env=cli_env(secret=None),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        base = _Lines(proc.stdout).wait_for(r"^(http://127\.0\.0\.1:\d+)/$").group(1)
        assert _post(f"{base}/unsubscribe/{token}", ONE_CLICK) == (200, "unsubscribed\n")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "public development key" in err and "use gunicorn in production" in err
    with session_scope(engine) as s:
        assert s.scalar(select(Suppression.source)) == "one-click"


def test_serve_command_refuses_smtp_without_secret(tmp_path: Path, sqlite_engine: Engine) -> None:
    cfg = _write_config(tmp_path, str(sqlite_engine.url), delivery="smtp")
    proc = subprocess.run(
        [sys.executable, "-m", "newsletter", "--config", str(cfg), "serve", "--port", "0"],
        cwd=tmp_path,
        env=cli_env(secret=None),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "NEWSLETTER_SECRET_KEY: not set" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_serve_command_refuses_smtp_with_a_loopback_base_url(
    tmp_path: Path, sqlite_engine: Engine
) -> None:
    """Its confirmation mails would carry links nobody else can open."""
    cfg = _write_config(tmp_path, str(sqlite_engine.url), delivery="smtp")
    proc = subprocess.run(
        [sys.executable, "-m", "newsletter", "--config", str(cfg), "serve", "--port", "0"],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "newsletter.base_url: SMTP delivery would mail links to http://127.0.0.1:8000" in (
        proc.stderr
    )
    assert "Traceback" not in proc.stderr


# --- with the rest of the product: preview links, sync, send, operator commands ----------


def _site_app(site: SampleSite, engine: Engine) -> FlaskClient:
    settings = load_settings(site.config, env={"NEWSLETTER_SECRET_KEY": SAMPLE_SECRET})
    secret = secret_from_settings(settings, env={"NEWSLETTER_SECRET_KEY": SAMPLE_SECRET})
    return create_app(settings, engine, testing=True, secret=secret).test_client()


def _app_path(url: str, base_url: str = "https://news.example.org/digest") -> str:
    """The path the app sees behind a proxy that strips ``base_url``'s prefix."""
    assert url.startswith(base_url + "/"), url
    return url[len(base_url) :]


def test_preview_link_one_click_then_send_skips_them(
    engine: Engine, db_url: str, tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    site = make_sample_site(tmp_path, engine, db_url, smtp=smtp_server.smtp_config())
    client = _site_app(site, engine)
    emails = site.preview()
    assert sorted(emails) == ["ada@example.org", "grace@example.org"]
    grace = emails["grace@example.org"]
    assert grace["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    https, mailto = list_unsubscribe_urls(grace)
    assert https.startswith("https://news.example.org/digest/unsubscribe/")
    assert mailto == "mailto:unsubscribe@example.org?subject=unsubscribe"
    html = grace.get_body(("html",))
    assert html is not None and f'href="{https}"' in html.get_content()  # the footer link

    # What Gmail does when Grace presses its "Unsubscribe" button.
    r = client.post(_app_path(https), data=ONE_CLICK)
    assert r.status_code == 200

    sent = site.invoke("send", "--now")
    assert sent.exit_code == 0, sent.output
    assert sent.output.splitlines()[0].startswith("sent 1,")
    assert smtp_server.per_recipient() == {"ada@example.org": 1}

    # The link in the mail Ada really received works the same way.
    received = smtp_server.received_by("ada@example.org")[0].message
    assert received["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    ada_url = list_unsubscribe_urls(received)[0]
    assert client.post(_app_path(ada_url), data=ONE_CLICK).status_code == 200
    listed = site.invoke("subscribers", "list", "--unsubscribed", "--json")
    rows = json.loads(listed.output)
    assert {(r["email"], r["source"]) for r in rows} == {
        ("ada@example.org", "one-click"),
        ("grace@example.org", "one-click"),
    }


def test_sync_never_reactivates_an_unsubscribe(engine: Engine, db_url: str, tmp_path: Path) -> None:
    site = make_sample_site(tmp_path, engine, db_url)
    client = _site_app(site, engine)
    ada_url = list_unsubscribe_urls(site.preview()["ada@example.org"])[0]
    page = client.get(_app_path(ada_url)).text
    r = client.post(_app_path(ada_url), data={"form_key": Site.form_key(page, "unsubscribe")})
    assert r.status_code == 200 and "You are unsubscribed" in r.text

    # The operator edits Ada's profile and says, explicitly, active: true.
    profile = tmp_path / "subscribers" / "ada.yaml"
    profile.write_text(profile.read_text() + "active: true\n", encoding="utf-8")
    synced = site.invoke("subscribers", "sync")
    assert synced.exit_code == 0, synced.output
    assert "stays unsubscribed: ada@example.org" in synced.output
    with session_scope(engine) as s:
        assert s.execute(select(Suppression.email, Suppression.source)).all() == [
            ("ada@example.org", "page")
        ]
        ids = list(s.scalars(select(Subscriber.id)))
        assert [p.email for p in load_profiles(s, ids).values()] == ["grace@example.org"]
    assert sorted(site.preview()) == ["grace@example.org"]
    listed = site.invoke("subscribers", "list").output
    assert "ada@example.org\tunsubscribed" in listed


def test_operator_commands(engine: Engine, db_url: str, tmp_path: Path) -> None:
    site = make_sample_site(tmp_path, engine, db_url)
    client = _site_app(site, engine)
    ada_url = list_unsubscribe_urls(site.preview()["ada@example.org"])[0]

    r = site.invoke("subscribers", "unsubscribe", " Ada@Example.ORG ")
    assert (r.exit_code, r.output) == (0, "unsubscribed ada@example.org (operator)\n")
    r = site.invoke("subscribers", "unsubscribe", "ada@example.org")
    assert r.exit_code == 0 and "ada@example.org was already unsubscribed (operator, " in r.output
    # The subscriber cannot undo the operator's decision from the web page.
    assert 'id="resubscribe"' not in client.get(_app_path(ada_url)).text

    r = site.invoke("subscribers", "unsubscribe", "someone@example.net", "--source", "mailto")
    assert r.exit_code == 0 and "unsubscribed someone@example.net (mailto)" in r.output
    assert "no subscriber has this address yet" in r.output
    r = site.invoke("subscribers", "unsubscribe", "not-an-address")
    assert r.exit_code == 1 and "error: 'not-an-address':" in r.output

    r = site.invoke("subscribers", "list", "--unsubscribed")
    lines = sorted(line.split("\t")[:2] for line in r.output.splitlines())
    assert lines == [["ada@example.org", "operator"], ["someone@example.net", "mailto"]]

    r = site.invoke("subscribers", "resubscribe", "ADA@example.org")
    assert (r.exit_code, r.output) == (0, "re-subscribed ada@example.org\n")
    r = site.invoke("subscribers", "resubscribe", "ada@example.org")
    assert r.exit_code == 1 and "error: ada@example.org is not unsubscribed" in r.output

    r = site.invoke("subscribers", "revoke-links", "ada@example.org")
    assert r.exit_code == 0 and "new links use version 2" in r.output
    assert client.get(_app_path(ada_url)).status_code == 400
    new_url = list_unsubscribe_urls(site.preview()["ada@example.org"])[0]
    assert new_url != ada_url
    assert client.get(_app_path(new_url)).status_code == 200
    r = site.invoke("subscribers", "revoke-links", "nobody@example.org")
    assert r.exit_code == 1 and "error: no subscriber with address nobody@example.org" in r.output


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_systemd_unit_verifies(tmp_path: Path) -> None:
    unit = (ROOT / "deploy" / "newsletter-web.service").read_text()
    gunicorn = "/opt/newsletter/venv/bin/gunicorn"
    assert f"ExecStart={gunicorn} " in unit
    assert "'newsletter.web:create_wsgi_app(proxies=1)'" in unit
    # verify checks that ExecStart exists; the venv only exists on a real install.
    (tmp_path / "newsletter-web.service").write_text(unit.replace(gunicorn, "/bin/true"))
    proc = subprocess.run(
        ["systemd-analyze", "verify", "newsletter-web.service"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (proc.returncode, proc.stderr.strip()) == (0, "")
