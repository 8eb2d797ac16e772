"""Sync the subscribers directory into the database: validate every file, apply the valid.

Lives in the pipeline because it joins two stages: ``profiles`` reads and validates the
files, ``db.subscribers`` applies them; neither knows the other.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sqlalchemy.orm import Session

from newsletter.db.subscribers import SyncResult, sync_subscribers
from newsletter.errors import ProfileError
from newsletter.profiles import LoadResult, display_path, read_profiles


def sync_directory(
    session: Session, directory: Path, *, now: datetime
) -> tuple[LoadResult, SyncResult]:
    """Validate every profile under ``directory`` and apply the valid ones.

    Subscribers of files with problems, and addresses whose profile is invalid or
    duplicated, are left exactly as they were; the caller reports ``problems``.
    """
    if not directory.is_dir():
        raise ProfileError("not a directory", path=display_path(directory))
    loaded = read_profiles(directory)
    synced = sync_subscribers(
        session,
        loaded.profiles,
        now=now,
        keep_files=loaded.failed_files,
        keep_emails=loaded.held_emails,
    )
    return loaded, synced
