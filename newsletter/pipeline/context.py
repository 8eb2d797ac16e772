"""What one send run shares between its parts: planning, composing and delivery."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine

from newsletter.config import Settings
from newsletter.delivery import Sender
from newsletter.pipeline.send_report import SendOptions


@dataclass
class Clock:
    """The run's time: tests and simulations pass their own."""

    now: Callable[[], datetime]
    sleep: Callable[[float], None]


@dataclass(frozen=True)
class RunContext:
    """One run's fixed state: where it writes, how it sends, who it is, its time.

    ``stop`` ends the run after the messages in flight (SIGTERM in ``run``); ``worker``
    names this process in every claim and lease it holds.
    """

    engine: Engine
    settings: Settings
    sender: Sender
    options: SendOptions
    clock: Clock
    stop: threading.Event
    worker: str
    rng: random.Random
