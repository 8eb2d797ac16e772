"""Polite HTTP for feeds, done by hand with urllib rather than through feedparser.

Doing it here gives control over what feedparser's fetcher hides: conditional GET, one
deadline for the whole download, a size limit (also after decompression), redirects
told apart as permanent or temporary, and a truncated body noticed instead of parsed.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit

from newsletter.config import FetchSettings
from newsletter.errors import FeedError

log = logging.getLogger(__name__)

MAX_REDIRECTS = 5
PERMANENT_REDIRECTS = frozenset({301, 308})
TEMPORARY_REDIRECTS = frozenset({302, 303, 307})
# Handed on to feedparser: content-type carries the charset, content-location the base
# for relative links.
PASSED_HEADERS = ("content-type", "content-location", "content-language")
_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class Download:
    """What one fetch brought back; errors are raised as :class:`FeedError` instead."""

    status: Literal["ok", "not-modified", "gone"]
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    http_status: int | None = None  # None for a local file
    final_url: str = ""  # where the body came from, after redirects
    permanent_url: str | None = None  # set when permanent redirects moved the feed
    etag: str | None = None
    last_modified: str | None = None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Surface every 3xx as an HTTPError so each hop can be classified."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


class _Watchdog:
    """One wall-clock deadline for a whole fetch, connect to last body byte.

    A socket timeout bounds each operation, not their sum: a server sending a byte every
    second never trips it. At the deadline a timer shuts the connection's socket down,
    which wakes a blocked read at once; the fetch then reports the time it really took.
    """

    def __init__(self, seconds: float) -> None:
        self.started = time.monotonic()
        self.deadline = self.started + seconds
        self.fired = False
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def attach(self, sock: socket.socket) -> None:
        """Watch a freshly connected socket; refuse it when the deadline already passed."""
        with self._lock:
            if not self.fired:
                self._socks.append(sock)
                return
        sock.close()
        raise TimeoutError("fetch deadline passed while connecting")

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            socks, self._socks = self._socks, []
        for sock in socks:
            with contextlib.suppress(OSError):  # already closed: nothing left to wake
                sock.shutdown(socket.SHUT_RDWR)


class _TrackedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args: Any, watchdog: _Watchdog, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._watchdog = watchdog

    def connect(self) -> None:
        super().connect()
        self._watchdog.attach(self.sock)


class _TrackedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args: Any, watchdog: _Watchdog, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._watchdog = watchdog

    def connect(self) -> None:
        super().connect()
        self._watchdog.attach(self.sock)


_TRACKED: dict[type, type] = {
    http.client.HTTPConnection: _TrackedHTTPConnection,
    http.client.HTTPSConnection: _TrackedHTTPSConnection,
}


class _WatchedOpen:
    """Build connections that register with the request's watchdog."""

    def do_open(self, http_class: Any, req: Any, **kwargs: Any) -> Any:
        dog = getattr(req, "watchdog", None)
        if dog is not None and http_class in _TRACKED:
            http_class, kwargs = _TRACKED[http_class], {**kwargs, "watchdog": dog}
        return super().do_open(http_class, req, **kwargs)  # type: ignore[misc]


class _HTTPHandler(_WatchedOpen, urllib.request.HTTPHandler):
    pass


class _HTTPSHandler(_WatchedOpen, urllib.request.HTTPSHandler):
    pass


_OPENER = urllib.request.build_opener(_NoRedirect, _HTTPHandler, _HTTPSHandler)


def download(
    url: str,
    settings: FetchSettings,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
) -> Download:
    """Fetch ``url`` (http(s) or a local path); raise :class:`FeedError` on any failure."""
    if url.startswith(("http://", "https://")):
        return _download_http(url, settings, etag=etag, last_modified=last_modified)
    return _read_file(url, settings)


def _read_file(url: str, settings: FetchSettings) -> Download:
    path = Path(url[len("file://") :] if url.startswith("file://") else url)
    try:
        with path.open("rb") as fh:
            body = fh.read(settings.max_bytes + 1)
    except FileNotFoundError as e:
        raise FeedError("file not found", url=url) from e
    except OSError as e:
        raise FeedError(f"cannot read file: {e.strerror or e}", url=url) from e
    if len(body) > settings.max_bytes:
        raise FeedError(f"larger than fetch.max_bytes ({settings.max_bytes} bytes)", url=url)
    return Download(status="ok", body=body, final_url=str(path))


def _request(
    url: str, settings: FetchSettings, etag: str | None, modified: str | None
) -> urllib.request.Request:
    headers = {
        "User-Agent": settings.user_agent,
        "Accept": (
            "application/atom+xml, application/rss+xml, application/rdf+xml, "
            "application/xml;q=0.9, text/xml;q=0.9, */*;q=0.1"
        ),
        "Accept-Encoding": "gzip, deflate",
    }
    if etag:
        headers["If-None-Match"] = etag
    if modified:
        headers["If-Modified-Since"] = modified
    return urllib.request.Request(url, headers=headers, method="GET")


def _timeout(url: str, dog: _Watchdog) -> FeedError:
    # The time it really took: a message saying "8 s" after two minutes would hide a bug.
    return FeedError(f"timed out after {time.monotonic() - dog.started:.1f} s", url=url)


def _download_http(
    url: str, settings: FetchSettings, *, etag: str | None, last_modified: str | None
) -> Download:
    with _Watchdog(settings.timeout_seconds) as dog:
        try:
            result = _fetch_http(url, settings, dog, etag=etag, last_modified=last_modified)
        except FeedError as e:
            # A socket shut by the watchdog surfaces as EOF or a reset: it is the deadline.
            if dog.fired:
                raise _timeout(url, dog) from e
            raise
        if dog.fired:  # woken at EOF with no Content-Length: the body may be short
            raise _timeout(url, dog)
        return result


def _fetch_http(
    url: str,
    settings: FetchSettings,
    dog: _Watchdog,
    *,
    etag: str | None,
    last_modified: str | None,
) -> Download:
    current = url
    permanent: str | None = None
    still_permanent = True  # only an unbroken chain of 301/308 from the start moves the feed
    for _hop in range(MAX_REDIRECTS + 1):
        remaining = dog.remaining()
        if remaining <= 0:
            raise _timeout(url, dog)
        req = _request(current, settings, etag, last_modified)
        req.watchdog = dog  # type: ignore[attr-defined]
        try:
            resp = _OPENER.open(req, timeout=remaining)
        except urllib.error.HTTPError as e:
            with e:
                code = e.code
                headers = {k.lower(): v for k, v in e.headers.items()}
            if code in PERMANENT_REDIRECTS or code in TEMPORARY_REDIRECTS:
                target = headers.get("location")
                if not target:
                    raise FeedError(f"HTTP {code} without a Location header", url=url) from e
                nxt = urljoin(current, target.strip())
                if urlsplit(nxt).scheme not in ("http", "https"):
                    raise FeedError(f"HTTP {code} redirects to {nxt!r}", url=url) from e
                if code in PERMANENT_REDIRECTS and still_permanent:
                    permanent = nxt
                else:
                    still_permanent = False
                log.debug("%s: HTTP %d -> %s", current, code, nxt)
                current = nxt
                continue
            if code == 304:
                return Download(
                    status="not-modified",
                    http_status=304,
                    final_url=current,
                    permanent_url=permanent,
                    etag=headers.get("etag") or etag,
                    last_modified=headers.get("last-modified") or last_modified,
                )
            if code == 410:
                return Download(
                    status="gone", http_status=410, final_url=current, permanent_url=permanent
                )
            reason = (e.reason or http.client.responses.get(code, "")).strip()
            raise FeedError(f"HTTP {code} {reason}".rstrip(), url=url, status=code) from e
        except TimeoutError as e:
            raise _timeout(url, dog) from e
        except urllib.error.URLError as e:
            if isinstance(e.reason, TimeoutError):
                raise _timeout(url, dog) from e
            raise FeedError(f"network error: {_reason(e.reason)}", url=url) from e
        except (OSError, http.client.HTTPException, ValueError) as e:
            raise FeedError(f"network error: {_reason(e)}", url=url) from e
        with resp:
            status = resp.status
            headers = {k.lower(): v for k, v in resp.headers.items()}
            raw = _read_body(resp, url, settings, dog)
        body = _decode_body(raw, headers.get("content-encoding", ""), url, settings)
        return Download(
            status="ok",
            body=body,
            headers={k: headers[k] for k in PASSED_HEADERS if k in headers},
            http_status=status,
            final_url=current,
            permanent_url=permanent,
            etag=headers.get("etag"),
            last_modified=headers.get("last-modified"),
        )
    raise FeedError(f"more than {MAX_REDIRECTS} redirects", url=url)


def _reason(reason: object) -> str:
    if isinstance(reason, ssl.SSLError):
        return f"TLS: {reason.reason or reason}"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


def _read_body(
    resp: http.client.HTTPResponse, url: str, settings: FetchSettings, dog: _Watchdog
) -> bytes:
    """Read the whole body within the deadline and size limit; notice a short body."""
    expected = resp.getheader("content-length")
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            if dog.remaining() <= 0:
                raise _timeout(url, dog)
            chunk = resp.read(_CHUNK)
            if not chunk:
                break
            size += len(chunk)
            if size > settings.max_bytes:
                raise FeedError(
                    f"larger than fetch.max_bytes ({settings.max_bytes} bytes)", url=url
                )
            chunks.append(chunk)
    except http.client.IncompleteRead as e:
        raise FeedError(f"truncated response ({size + len(e.partial)} bytes)", url=url) from e
    except TimeoutError as e:
        raise _timeout(url, dog) from e
    except (OSError, http.client.HTTPException) as e:
        raise FeedError(f"network error while reading: {_reason(e)}", url=url) from e
    if expected is not None and expected.strip().isdigit() and size < int(expected):
        raise FeedError(f"truncated response ({size} of {int(expected)} bytes)", url=url)
    return b"".join(chunks)


def _decode_body(raw: bytes, encoding: str, url: str, settings: FetchSettings) -> bytes:
    """Undo gzip/deflate with the size limit applied to the result (no zip bombs)."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise FeedError(f"unsupported Content-Encoding {encoding!r}", url=url)
    wbits = 16 + zlib.MAX_WBITS if "gzip" in encoding else zlib.MAX_WBITS
    try:
        try:
            d = zlib.decompressobj(wbits)
            out = d.decompress(raw, settings.max_bytes + 1)
        except zlib.error:
            if encoding != "deflate":
                raise
            d = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate, as some servers send
            out = d.decompress(raw, settings.max_bytes + 1)
    except zlib.error as e:
        raise FeedError(f"corrupt {encoding} body: {e}", url=url) from e
    if len(out) > settings.max_bytes or d.unconsumed_tail:
        raise FeedError(f"larger than fetch.max_bytes ({settings.max_bytes} bytes)", url=url)
    if not d.eof:
        raise FeedError(f"truncated {encoding} body", url=url)
    return out
