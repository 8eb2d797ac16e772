"""Preview delivery: every message written to disk as an ``.eml`` file, nothing mailed."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from pathlib import Path

from newsletter.delivery.base import OutgoingMessage, Receipt, Sender, nothing_before_data
from newsletter.delivery.smtp import quoted_printable_bodies
from newsletter.errors import DeliveryError


def _safe_filename(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9@._+-]", "_", text)[:150] or "message"


def private_dirs(path: Path) -> None:
    """``mkdir -p`` with every directory it creates 0700 (``mkdir(parents=True)`` gives
    the parents the umask's mode); existing ones keep theirs."""
    missing: list[Path] = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)


class PreviewSender(Sender):
    """Writes each message to ``outbox/sent/<period>/<recipient>.eml`` instead of mailing.

    The write is atomic (temp file, fsync, rename), so a crash never leaves half a file
    that looks delivered.
    """

    def __init__(self, outbox_dir: Path) -> None:
        self.root = Path(outbox_dir) / "sent"

    def describe(self) -> str:
        return f"preview to {self.root}"

    def path_for(self, message: OutgoingMessage) -> Path:
        name = _safe_filename(message.recipient)
        if message.digest_id is not None:
            name = f"{name}-{message.digest_id}"
        return self.root / _safe_filename(message.period or "undated") / f"{name}.eml"

    def send(
        self, message: OutgoingMessage, before_data: Callable[[], None] = nothing_before_data
    ) -> Receipt:
        path = self.path_for(message)
        try:
            private_dirs(path.parent)
        except OSError as e:
            raise DeliveryError(
                f"cannot create {path.parent}: {e}", recipient=message.recipient, permanent=True
            ) from e
        before_data()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            # Private (0600): a message holds an address and a personal unsubscribe link.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with open(fd, "wb") as f:
                # Quoted-printable, as a file a mail client or a person opens is best read.
                f.write(quoted_printable_bodies(message.data) or message.data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise DeliveryError(
                f"cannot write {path}: {e}", recipient=message.recipient, permanent=True
            ) from e
        return Receipt(reply=f"written to {path}", message_id=message.message_id)
