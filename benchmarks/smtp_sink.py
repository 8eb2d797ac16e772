"""A minimal SMTP sink on 127.0.0.1 for the benchmark's SMTP stage.

It speaks just enough SMTP for ``smtplib`` (EHLO/HELO with 8BITMIME, PIPELINING and
SIZE, MAIL, RCPT, DATA, RSET, NOOP, QUIT), reads each message in large chunks and
throws it away, counting messages and bytes. One thread per connection; the work per
message is a few ``recv`` calls and a search for the end-of-data marker, so it stays
well ahead of the sender it measures.
"""

from __future__ import annotations

import multiprocessing
import resource
import socket
import socketserver
import threading
from multiprocessing.connection import Connection
from types import TracebackType

_END_OF_DATA = b"\r\n.\r\n"
_CHUNK = 1 << 16


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(b"220 bench-sink ESMTP\r\n")
        buf = b""
        while True:
            while b"\r\n" not in buf:
                chunk = sock.recv(_CHUNK)
                if not chunk:
                    return
                buf += chunk
            line, _, buf = buf.partition(b"\r\n")
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                sock.sendall(
                    b"250-bench-sink\r\n250-8BITMIME\r\n250-PIPELINING\r\n250 SIZE 104857600\r\n"
                )
            elif verb == b"DATA":
                sock.sendall(b"354 end with <CRLF>.<CRLF>\r\n")
                buf = b"\r\n" + buf  # the marker may close an empty message at once
                while _END_OF_DATA not in buf:
                    chunk = sock.recv(_CHUNK)
                    if not chunk:
                        return
                    # Keep only the tail that could hold a split marker.
                    buf = buf[-(len(_END_OF_DATA) - 1) :] + chunk
                    self.server.count(len(chunk))
                buf = buf.partition(_END_OF_DATA)[2]
                self.server.count(0, message=True)
                sock.sendall(b"250 2.0.0 queued\r\n")
            elif verb == b"QUIT":
                sock.sendall(b"221 bye\r\n")
                return
            elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                sock.sendall(b"250 ok\r\n")
            else:
                sock.sendall(b"502 command not implemented\r\n")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self._lock = threading.Lock()
        self.messages = 0
        self.bytes = 0

    def count(self, n_bytes: int, *, message: bool = False) -> None:
        with self._lock:
            self.bytes += n_bytes
            self.messages += int(message)


def _serve(conn: Connection) -> None:
    """The sink's own process: serve until told to stop, then report the count."""
    server = _Server()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    conn.send(server.server_address[1])
    conn.recv()  # blocks until the parent asks to stop
    server.shutdown()
    server.server_close()
    use = resource.getrusage(resource.RUSAGE_SELF)
    conn.send((server.messages, server.bytes, use.ru_utime + use.ru_stime))
    conn.close()


class SmtpSink:
    """``with SmtpSink() as sink:`` serves on ``sink.port`` until the block ends.

    The server runs in a process of its own, so it does not compete with the sender
    it measures for the interpreter lock (but for a CPU core: ``cpu_seconds`` says how
    much it took). ``messages`` is known once the block ended.
    """

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("fork")
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_serve, args=(child,), daemon=True)
        self.port = 0
        self.messages = 0
        self.bytes = 0
        self.cpu_seconds = 0.0  # the sink process's CPU time, in all

    def __enter__(self) -> SmtpSink:
        self._process.start()
        self.port = int(self._conn.recv())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._conn.send("stop")
        self.messages, self.bytes, self.cpu_seconds = self._conn.recv()
        self._process.join()
        self._conn.close()
