"""Preview: write the digests that would go out to disk, with an index page. Sends nothing.

Per subscriber ``<out>/<day>/<email>.html``, ``.txt`` and ``.eml`` (the complete
message), and ``<out>/index.html`` listing the run. Nothing is written to the database
and nothing is marked sent, so a second run gives the same files: tokens are
deterministic, ``Date`` is the scheduled send moment of the day and ``Message-ID`` is
derived from (list, subscriber, period). Files are replaced atomically.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from newsletter.config import Settings
from newsletter.db.subscriber_reads import active_subscriber_ids, load_profiles, subscriber_id
from newsletter.delivery.preview import private_dirs
from newsletter.errors import NewsletterError
from newsletter.pipeline.compose import ComposedDigest, Composer, day_jobs

log = logging.getLogger(__name__)

INDEX = "index.html"
_EXTS = (".html", ".txt", ".eml")


@dataclass(frozen=True, slots=True)
class PreviewRow:
    """One line of the index: a subscriber and their email (or why there is none)."""

    email: str
    name: str
    day: str
    subject: str = ""
    n_entries: int = 0
    n_more: int = 0
    size: int = 0
    html_href: str = ""
    text_href: str = ""
    eml_href: str = ""
    note: str = ""


@dataclass
class PreviewResult:
    out_dir: Path
    index: Path
    rows: list[PreviewRow] = field(default_factory=list)

    @property
    def written(self) -> int:
        return sum(1 for r in self.rows if r.html_href)

    @property
    def days(self) -> list[str]:
        return sorted({r.day for r in self.rows})


def safe_name(email: str) -> str:
    """A file name for an address; a short hash keeps altered names distinct."""
    name = re.sub(r"[^a-z0-9@._+-]", "_", email.lower())[:120].strip(".") or "subscriber"
    if name != email.lower():
        name += "-" + hashlib.sha256(email.encode()).hexdigest()[:8]
    return name


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        # Private (0600): a preview holds an address and a personal unsubscribe link.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise NewsletterError(f"cannot write {path}: {e}") from e


def _row(out_dir: Path, digest: ComposedDigest) -> PreviewRow:
    p = digest.profile
    day = digest.day.isoformat()
    base = out_dir / day / safe_name(p.email)
    paths = [base.with_name(base.name + ext) for ext in _EXTS]
    email = digest.email
    if email is None:
        for stale in paths:  # an earlier preview of this day may have had an email
            stale.unlink(missing_ok=True)
        return PreviewRow(p.email, p.name or "", day, note="no email: nothing new matched")
    private_dirs(base.parent)
    _write(paths[0], email.html.encode("utf-8"))
    _write(paths[1], email.text.encode("utf-8"))
    _write(paths[2], email.data)
    rel = [f"{day}/{path.name}" for path in paths]
    return PreviewRow(
        email=p.email,
        name=p.name or "",
        day=day,
        subject=email.subject,
        n_entries=len(email.entry_ids),
        n_more=email.n_more,
        size=email.size,
        html_href=rel[0],
        text_href=rel[1],
        eml_href=rel[2],
    )


def run_preview(
    engine: Engine,
    settings: Settings,
    *,
    now: datetime,
    out_dir: Path | None = None,
    emails: Sequence[str] | None = None,
    day: date | None = None,
    composer: Composer | None = None,
) -> PreviewResult:
    """Compose the digests of ``day`` (default: today for each subscriber) and write them.

    ``emails`` restricts the run to those subscribers; one that cannot be mailed
    (unknown, inactive or unsubscribed) is an error naming it.
    """
    out = (out_dir or settings.newsletter.outbox_dir).resolve()
    composer = composer or Composer(settings)
    result = PreviewResult(out_dir=out, index=out / INDEX)
    with Session(engine) as session:
        ids = active_subscriber_ids(session)
        if emails is not None:
            active = set(ids)
            ids = []
            for address in emails:
                sid = subscriber_id(session, address)
                if sid is None or sid not in active:
                    raise NewsletterError(
                        f"no subscriber {address} who can be mailed "
                        "(unknown, inactive, deleted or unsubscribed; see `newsletter subscribers`)"
                    )
                ids.append(sid)
            ids = list(dict.fromkeys(ids))
        batch = settings.newsletter.batch_size
        for i in range(0, len(ids), batch):
            profiles = load_profiles(session, ids[i : i + batch])
            jobs = day_jobs(settings, profiles, now=now, day=day)
            for digest in composer.compose(session, jobs):
                result.rows.append(_row(out, digest))
        session.rollback()  # preview writes nothing to the database
    private_dirs(out)
    result.rows.sort(key=lambda r: (r.day, r.email.lower()))
    label = ", ".join(result.days) or (day or now.date()).isoformat()
    page = composer.renderer.preview_index(result.rows, day=label)
    _write(result.index, page.encode("utf-8"))
    log.debug("preview: %d emails for %d subscribers in %s", result.written, len(result.rows), out)
    return result
