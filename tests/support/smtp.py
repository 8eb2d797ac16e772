"""A real SMTP server for tests: aiosmtpd on 127.0.0.1 that records what it accepts.

Fault modes make it misbehave on purpose — answer 421/451/550 for chosen recipients or
for the first N attempts, drop the connection after DATA without replying, stall until
the client times out, refuse to greet, hide 8BITMIME, offer PIPELINING — so the sender's retry and
exactly-once logic is exercised against real sockets, not mocks.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, Literal

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session

Stage = Literal["EHLO", "MAIL", "RCPT", "DATA"]


@dataclass
class Fault:
    """Misbehave at ``stage``: reply ``reply`` (e.g. "451 4.7.1 Try later"), or "drop", or
    "stall", or (DATA) "accept-slowly": queue the message, answer 250 only after the
    stall. Only for ``recipients`` if given; only ``times`` times if given (then the
    server behaves again)."""

    stage: Stage
    reply: str
    recipients: frozenset[str] | None = None
    times: int | None = None
    used: int = 0

    def applies(self, recipient: str | None) -> bool:
        if self.times is not None and self.used >= self.times:
            return False
        return self.recipients is None or recipient in self.recipients


@dataclass(frozen=True)
class Received:
    """One accepted message."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    mail_options: tuple[str, ...]
    connection: int  # which TCP connection carried it (to check reuse)

    @property
    def message(self) -> EmailMessage:
        # Line endings as a mailbox stores them, so get_content() reads naturally.
        msg = email.message_from_bytes(
            self.data.replace(b"\r\n", b"\n"), policy=email.policy.default
        )
        assert isinstance(msg, EmailMessage)
        return msg


@dataclass
class RecordingHandler:
    """The aiosmtpd handler: records accepted messages, applies faults."""

    faults: list[Fault] = field(default_factory=list)
    delay: float = 0.0  # seconds spent before accepting each message (crash tests)
    stall_seconds: float = 30.0
    offer_8bitmime: bool = True
    offer_pipelining: bool = False  # aiosmtpd reads pipelined commands but never says so
    messages: list[Received] = field(default_factory=list)
    attempts: Counter[str] = field(default_factory=Counter)  # DATA attempts per recipient
    connections: int = 0
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def _fault(self, stage: Stage, recipient: str | None) -> Fault | None:
        with self._cond:
            for f in self.faults:
                if f.stage == stage and f.applies(recipient):
                    f.used += 1
                    return f
        return None

    async def _apply(self, fault: Fault, server: SMTPServer) -> str | None:
        if fault.reply == "stall":
            await asyncio.sleep(self.stall_seconds)
            return "451 4.3.0 stalled"
        if fault.reply == "drop":
            assert server.transport is not None
            server.transport.abort()
            return "421 4.3.0 dropped"
        return fault.reply

    async def handle_EHLO(
        self,
        server: SMTPServer,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        with self._cond:
            self.connections += 1
        session.host_name = hostname
        fault = self._fault("EHLO", None)
        if fault is not None:
            reply = await self._apply(fault, server)
            return [reply or "421 4.3.0 closing"]
        if not self.offer_8bitmime:
            responses = [r for r in responses if "8BITMIME" not in r]
        if self.offer_pipelining:
            responses = [*responses[:-1], "250-PIPELINING", responses[-1]]
        return responses

    async def handle_MAIL(
        self,
        server: SMTPServer,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        fault = self._fault("MAIL", None)
        if fault is not None:
            reply = await self._apply(fault, server)
            if reply:
                return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTPServer,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        fault = self._fault("RCPT", address)
        if fault is not None:
            reply = await self._apply(fault, server)
            if reply:
                return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        rcpts = tuple(envelope.rcpt_tos)
        with self._cond:
            for r in rcpts:
                self.attempts[r] += 1
            self._cond.notify_all()
        slow = 0.0
        for r in rcpts:
            fault = self._fault("DATA", r)
            if fault is not None and fault.reply == "accept-slowly":
                slow = self.stall_seconds  # queued now, the 250 only after a while
            elif fault is not None:
                reply = await self._apply(fault, server)
                if reply:
                    return reply
        if self.delay:
            await asyncio.sleep(self.delay)
        content = envelope.original_content or b""
        with self._cond:
            self.messages.append(
                Received(
                    mail_from=envelope.mail_from or "",
                    rcpt_tos=rcpts,
                    data=bytes(content),
                    mail_options=tuple(envelope.mail_options),
                    connection=self.connections,
                )
            )
            n = len(self.messages)
            self._cond.notify_all()
        if slow:
            await asyncio.sleep(slow)
        return f"250 2.0.0 Ok: queued as Q{n}"

    def wait_for_data(self, count: int, timeout: float = 20.0) -> bool:
        """Block until ``count`` DATA commands have arrived (accepted or not yet)."""
        with self._cond:
            return self._cond.wait_for(lambda: sum(self.attempts.values()) >= count, timeout)

    def wait_for(self, count: int, timeout: float = 20.0) -> bool:
        """Block until ``count`` messages were accepted (a condition, not a sleep)."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self.messages) >= count, timeout)


class _Controller(Controller):
    """``Controller`` on an ephemeral port (port 0), read back once bound."""

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


@dataclass
class SmtpTestServer:
    controller: Controller
    handler: RecordingHandler

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        return int(self.controller.port)

    @property
    def messages(self) -> list[Received]:
        with self.handler._cond:
            return list(self.handler.messages)

    def received_by(self, address: str) -> list[Received]:
        return [m for m in self.messages if address in m.rcpt_tos]

    def per_recipient(self) -> Counter[str]:
        return Counter(r for m in self.messages for r in m.rcpt_tos)

    def add_fault(self, fault: Fault) -> None:
        with self.handler._cond:
            self.handler.faults.append(fault)

    def smtp_config(self, **overrides: Any) -> dict[str, Any]:
        """An ``[smtp]`` table pointing at this server, with fast test timings."""
        cfg: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "timeout_seconds": 5.0,
            "max_attempts": 4,
            "retry_base_seconds": 0.01,
            "retry_max_seconds": 0.05,
        }
        cfg.update(overrides)
        return cfg


def start_smtp_server(
    handler: RecordingHandler | None = None, **smtp_kwargs: Any
) -> SmtpTestServer:
    """Start a server; ``smtp_kwargs`` go to aiosmtpd's ``SMTP`` (e.g. ``tls_context``)."""
    handler = handler or RecordingHandler()
    controller = _Controller(
        handler, hostname="127.0.0.1", port=0, ready_timeout=10.0, **smtp_kwargs
    )
    controller.start()
    return SmtpTestServer(controller, handler)


@pytest.fixture
def pipelining_server() -> Iterator[SmtpTestServer]:
    """Like ``smtp_server``, advertising PIPELINING (RFC 2920)."""
    server = start_smtp_server(RecordingHandler(offer_pipelining=True))
    try:
        yield server
    finally:
        server.controller.stop()


@pytest.fixture
def smtp_server() -> Iterator[SmtpTestServer]:
    """A recording SMTP server on 127.0.0.1; add faults with ``add_fault``."""
    server = start_smtp_server()
    try:
        yield server
    finally:
        server.controller.stop()
