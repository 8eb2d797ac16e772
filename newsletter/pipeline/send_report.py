"""What a send run reports and how it is asked to run: the types ``send`` shares with
the CLI (summary line, progress bar, dry-run listing) and the scheduler."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal, Protocol

Outcome = Literal["sent", "skipped", "failed", "retried", "released", "lost"]


class SendProgress(Protocol):
    """What the CLI's progress bar gets told; every method is optional to act on."""

    def start(self, total: int) -> None: ...

    def advance(self, outcome: Outcome, recipient: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Planned:
    """What ``--dry-run`` reports for one subscriber."""

    recipient: str
    period: str
    subject: str | None  # None: nothing new, no email
    n_entries: int
    size: int = 0


@dataclass
class SendSummary:
    """The result of one run, for the summary line, the ``runs`` table and tests."""

    created: int = 0
    sent: int = 0
    skipped: int = 0
    failed: int = 0
    retried: int = 0
    pending: int = 0  # left pending at the end (waiting for a retry or a reachable server)
    ambiguous: int = 0  # ``sending`` rows nobody is working on
    failures: list[tuple[str, str]] = field(default_factory=list)  # (recipient, reason)
    planned: list[Planned] = field(default_factory=list)
    error: str | None = None  # the run itself stopped early (server unavailable)
    interrupted: bool = False
    dry_run: bool = False
    run_id: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.failed == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "sent": self.sent,
            "skipped": self.skipped,
            "failed": self.failed,
            "retried": self.retried,
            "pending": self.pending,
            "ambiguous": self.ambiguous,
            "failures": [{"recipient": r, "reason": e} for r, e in self.failures[:50]],
            "error": self.error,
            "interrupted": self.interrupted,
        }


@dataclass(frozen=True)
class SendOptions:
    """How a run chooses its work (the ``send`` command's flags)."""

    force: bool = False  # --now: the current period of everyone, send_time or not
    emails: tuple[str, ...] | None = None  # --subscriber
    dry_run: bool = False
    wait_for_retries: bool = True  # stay until rescheduled digests are settled
    lease: timedelta = timedelta(minutes=5)
