"""Postfix's ``smtp-sink`` (Debian's ``postfix`` package) as the benchmark's SMTP sink.

It is written in C, so it takes a small share of the two cores the send is measured
on, where the benchmark's own Python sink (:mod:`benchmarks.smtp_sink`) takes about
0.2 ms of CPU per message. It offers PIPELINING and 8BITMIME, as the own sink does.
``--sink postfix`` (or ``auto``: where installed) measures against it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from benchmarks.smtp_sink import SmtpSink

SMTP_SINK = "/usr/sbin/smtp-sink"
_COUNT = re.compile(rb"mesg=(\d+)")


def postfix_sink_path() -> str | None:
    """Where ``smtp-sink`` is, or None (``apt-get install postfix`` installs it)."""
    found = shutil.which("smtp-sink") or (SMTP_SINK if os.access(SMTP_SINK, os.X_OK) else None)
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostfixSink:
    """``with PostfixSink() as sink:`` runs ``smtp-sink`` on ``sink.port`` until the block
    ends; then ``messages`` (its own count) and ``cpu_seconds`` (its process CPU) are
    known. ``bytes`` stays 0: it does not count them."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path or postfix_sink_path() or SMTP_SINK
        self.port = 0
        self.messages = 0
        self.bytes = 0
        self.cpu_seconds = 0.0
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PostfixSink:
        self.port = _free_port()
        # -c: count sessions and messages on stdout; as root it must drop privileges.
        cmd = [self.path, "-c"]
        if os.geteuid() == 0:
            cmd += ["-u", "nobody"]
        cmd += [f"127.0.0.1:{self.port}", "256"]
        self._process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    err = self._process.stderr.read() if self._process.stderr else b""
                    msg = err.decode(errors="replace")
                    raise RuntimeError(f"smtp-sink did not start: {msg}") from None
                time.sleep(0.05)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        process = self._process
        if process is None:
            return
        self.cpu_seconds = _process_cpu(process.pid)
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=10)
        counts = _COUNT.findall(out)
        # The probe connection above is a session without a message: only mesg counts.
        self.messages = int(counts[-1]) if counts else 0


def _process_cpu(pid: int) -> float:
    """User + system CPU seconds of a running process, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14 and 15)


def sink_name(kind: str = "auto") -> str:
    """Which sink ``open_sink(kind)`` runs: "postfix smtp-sink" or "builtin"."""
    return (
        "postfix smtp-sink"
        if kind == "postfix" or (kind == "auto" and postfix_sink_path())
        else "builtin"
    )


def open_sink(kind: str = "auto") -> SmtpSink | PostfixSink:
    """The sink to measure against: ``postfix`` (``smtp-sink``), ``builtin`` (ours), or
    ``auto`` (``smtp-sink`` where installed)."""
    return PostfixSink() if sink_name(kind) == "postfix smtp-sink" else SmtpSink()
