"""One wall-clock deadline per feed, against raw sockets that trickle one byte at a time.

A per-socket timeout bounds each read, not the download: a server sending a byte every
0.2 s never trips it. The fetch must give up at its deadline however the bytes come.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from newsletter.config import FetchSettings
from newsletter.errors import FeedError
from newsletter.ingest.http import download

TIMEOUT = 1.0
STEP = 0.2  # seconds between bytes: far below any per-read timeout
BODY = b"<?xml version='1.0'?><feed xmlns='http://www.w3.org/2005/Atom'></feed>" * 3
HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/atom+xml\r\n"
    b"X-Padding: " + b"p" * 200 + b"\r\n"
    b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n"
)


class Trickler:
    """Accepts connections and sends ``HEAD + BODY``, one byte every STEP once past
    ``fast`` bytes; records how long the whole trickle would take."""

    def __init__(self, fast: int) -> None:
        self.fast = fast
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def trickle_seconds(self) -> float:
        return (len(HEAD + BODY) - self.fast) * STEP

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._send, args=(conn,), daemon=True).start()

    def _send(self, conn: socket.socket) -> None:
        data = HEAD + BODY
        with conn:
            try:
                conn.recv(65536)
                conn.sendall(data[: self.fast])
                for i in range(self.fast, len(data)):
                    if self.stop.wait(STEP):
                        return
                    conn.sendall(data[i : i + 1])
            except OSError:
                return  # the client hung up: what we want

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


@pytest.fixture(params=["headers", "body"])
def trickler(request: pytest.FixtureRequest) -> Iterator[Trickler]:
    server = Trickler(fast=20 if request.param == "headers" else len(HEAD) + 10)
    yield server
    server.close()


def test_trickling_server_is_cut_off_at_the_deadline(trickler: Trickler) -> None:
    settings = FetchSettings(timeout_seconds=TIMEOUT)
    assert trickler.trickle_seconds > 30 * TIMEOUT  # a per-read timeout would wait it out
    started = time.monotonic()
    with pytest.raises(FeedError) as info:
        download(f"http://127.0.0.1:{trickler.port}/feed", settings)
    elapsed = time.monotonic() - started
    # A correctness bound, not a speed target: the trickle would take 40+ s.
    assert elapsed < TIMEOUT + 10
    m = re.search(r": timed out after (\d+\.\d) s$", str(info.value))
    assert m, str(info.value)
    assert float(m.group(1)) >= TIMEOUT  # says the time it took, which is at least the limit


def test_fast_server_within_the_deadline_is_fine() -> None:
    server = Trickler(fast=len(HEAD + BODY))
    try:
        got = download(f"http://127.0.0.1:{server.port}/feed", FetchSettings(timeout_seconds=5))
    finally:
        server.close()
    assert got.status == "ok" and got.body == BODY
