"""Sync the subscribers directory into the database: validate every file, apply the valid.

Lives in the pipeline because it joins two stages: ``profiles`` reads and validates the
files, ``db.subscribers`` applies them; neither knows the other.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sqlalchemy.orm import Session

from newsletter.db.subscribers import SyncResult, live_sources, sync_subscribers
from newsletter.errors import ProfileError
from newsletter.profiles import LoadResult, display_path, parse_profiles, read_profiles


def sync_directory(
    session: Session,
    directory: Path,
    *,
    now: datetime,
    max_deactivate_share: float | None = None,
) -> tuple[LoadResult, SyncResult]:
    """Validate every profile under ``directory`` and apply the valid ones.

    A file with any problem (including an address twice) is left entirely as it was:
    none of its profiles is applied and none of its subscribers deactivated. Addresses
    whose profile is invalid or duplicated elsewhere are held too; the caller reports
    ``problems``. ``max_deactivate_share`` guards against an empty or wrong directory
    (see :func:`~newsletter.db.subscribers.sync_subscribers`).
    """
    if not directory.is_dir():
        raise ProfileError("not a directory", path=display_path(directory))
    loaded = read_profiles(directory)
    failed = loaded.failed_files
    apply = [p for p in loaded.profiles if p.source not in failed]
    held = set(loaded.held_emails) | {p.email for p in loaded.profiles if p.source in failed}
    synced = sync_subscribers(
        session,
        apply,
        now=now,
        keep_files=failed,
        keep_emails=held,
        max_deactivate_share=max_deactivate_share,
    )
    return loaded, synced


def sync_file(
    session: Session, directory: Path, source: str, *, now: datetime
) -> tuple[list[ProfileError], SyncResult | None]:
    """Sync the one file ``source`` (relative to ``directory``) that the web just wrote.

    A More/Fewer click or a saved preference changes one file; reading and comparing
    every profile of the directory for it would cost a full sync per click. Only this
    file's profiles are applied, and only subscribers of this file are deactivated when
    gone from it. A file with problems is applied not at all (problems returned, None);
    when one of its addresses belongs to another file, the whole directory is synced
    instead, so the duplicate is found as ``subscribers sync`` finds it.
    """
    path = directory / source
    text = path.read_text(encoding="utf-8-sig")
    profiles, problems, _ = parse_profiles(text, source=source, display=display_path(path))
    if problems:
        return list(problems), None
    owners = live_sources(session, [p.email for p in profiles])
    if any(owner != source for owner in owners.values()):
        loaded, synced = sync_directory(session, directory, now=now)
        return list(loaded.problems), synced
    return [], sync_subscribers(session, profiles, now=now, only_files={source})
