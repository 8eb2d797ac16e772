"""A real HTTP server on 127.0.0.1 with programmable routes, for the feed fetcher.

Each route answers with a :class:`Route`: a status, a body and headers, plus the
behaviours a polite client must handle: conditional GET (ETag / Last-Modified -> 304),
redirects, a body cut short, a server that stalls until the test ends. Every request is
recorded so tests can check what the client sent. :func:`serve_wsgi` runs a WSGI app
(the unsubscribe pages) the same way.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from werkzeug.serving import make_server


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/atom+xml; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    etag: str | None = None  # answer 304 when If-None-Match matches
    last_modified: str | None = None  # answer 304 when If-Modified-Since matches exactly
    truncate_to: int | None = None  # announce the full length, send this many bytes, hang up
    stall: bool = False  # never answer (until the server stops): for timeouts
    gate: threading.Event | None = None  # answer only once this is set: a slow feed


@dataclass(frozen=True)
class Seen:
    path: str
    headers: dict[str, str]  # lower-case names


class FeedServer:
    """``server.route("/feed.xml", Route(...))``, then fetch ``server.url("/feed.xml")``."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[Seen] = []
        self._release = threading.Event()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def start(self) -> FeedServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._release.is_set():
            return
        self._release.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    @property
    def base(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def url(self, path: str) -> str:
        return self.base + path

    def route(self, path: str, route: Route) -> str:
        self.routes[path] = route
        return self.url(path)

    def seen(self, path: str) -> list[Seen]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # quiet
                return

            def do_GET(self) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                with server._lock:
                    server.requests.append(Seen(self.path, headers))
                route = server.routes.get(self.path)
                if route is None:
                    self._send(404, b"not found", {"Content-Type": "text/plain"})
                    return
                if route.stall:
                    server._release.wait(30)
                    return
                if route.gate is not None:
                    route.gate.wait(30)
                extra = dict(route.headers)
                if route.etag:
                    extra["ETag"] = route.etag
                if route.last_modified:
                    extra["Last-Modified"] = route.last_modified
                inm = headers.get("if-none-match")
                ims = headers.get("if-modified-since")
                if route.status == 200 and (
                    (route.etag and inm == route.etag)
                    or (route.last_modified and not inm and ims == route.last_modified)
                ):
                    self._send(304, b"", extra)
                    return
                extra.setdefault("Content-Type", route.content_type)
                self._send(route.status, route.body, extra, truncate_to=route.truncate_to)

            def _send(
                self,
                status: int,
                body: bytes,
                headers: dict[str, str],
                truncate_to: int | None = None,
            ) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if status != 304:
                    self.send_header("Content-Length", str(len(body)))
                if truncate_to is not None:
                    self.send_header("Connection", "close")
                self.end_headers()
                if status == 304:
                    return
                self.wfile.write(body if truncate_to is None else body[:truncate_to])
                self.wfile.flush()
                if truncate_to is not None:
                    self.close_connection = True

        return Handler


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    """A fresh HTTP server on 127.0.0.1 for one test."""
    server = FeedServer().start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def serve_wsgi(app: Any) -> Iterator[str]:
    """``app`` on a real threaded server at 127.0.0.1, on a free port: its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
