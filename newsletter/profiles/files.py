"""Subscriber profiles: read and validate the YAML files under ``subscribers_dir``.

Every problem is collected, never raised on the first one, as a
:class:`~newsletter.errors.ProfileError` reading ``file:line: field: what is wrong``
with the real line (see :mod:`newsletter.profiles.schema`). The result also says which
files and addresses failed, so a sync can leave exactly those subscribers as they were:
a typo never costs anyone their digest.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from newsletter.domain import Profile
from newsletter.errors import ProfileError
from newsletter.profiles.schema import parse_profiles

YAML_SUFFIXES = (".yaml", ".yml")
# A profile is a few kilobytes; a list file of thousands stays far below this.
MAX_FILE_BYTES = 1 << 20  # 1 MiB


class _Unreadable(Exception):
    """Why a file is not read at all (never its content)."""


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What a directory of profiles holds: the valid profiles and every problem."""

    profiles: tuple[Profile, ...]
    problems: tuple[ProfileError, ...]
    files: tuple[str, ...]  # every file read, relative to the directory
    failed_files: frozenset[str] = frozenset()  # files with a problem: keep their subscribers
    held_emails: frozenset[str] = frozenset()  # invalid or duplicated: keep as they are
    warnings: tuple[ProfileError, ...] = ()  # likely typos that still parse: block nothing

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class _Collected:
    profiles: list[tuple[Profile, str, int]] = field(default_factory=list)  # with display, line
    invalid: list[str] = field(default_factory=list)  # addresses of invalid profiles
    problems: list[ProfileError] = field(default_factory=list)
    failed_files: set[str] = field(default_factory=set)
    warnings: list[ProfileError] = field(default_factory=list)


def profile_files(directory: Path) -> Iterator[tuple[str, Path]]:
    """``*.yaml`` and ``*.yml`` files under ``directory``, with their relative names,
    sorted; hidden files and directories (editor backups, ``.git``) are skipped."""
    found: list[tuple[str, Path]] = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if name.startswith(".") or not name.endswith(YAML_SUFFIXES):
                continue
            path = Path(root) / name
            found.append((path.relative_to(directory).as_posix(), path))
    yield from sorted(found)


def display_path(path: Path) -> str:
    """A path as the operator would type it: relative to the cwd when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def read_profiles(path: Path) -> LoadResult:
    """Read and validate every profile under ``path`` (a directory, or one file).

    Never raises for bad content: every problem is in the result. Raises
    :class:`ProfileError` only when ``path`` itself is missing, so that a mistyped
    directory can never look like "every subscriber was deleted".
    """
    if path.is_dir():
        files = list(profile_files(path))
    elif path.is_file():
        files = [(path.name, path)]
    else:
        raise ProfileError("no such directory or file", path=display_path(path))
    out = _Collected()
    base = display_path(path) if path.is_dir() else None
    root = path.resolve() if path.is_dir() else None
    for source, file in files:
        display = display_path(file) if base is None else os.path.join(base, *source.split("/"))
        try:
            data = _read_regular(file, root)
            text = data.decode("utf-8-sig")
        except _Unreadable as e:
            out.problems.append(ProfileError(f"{e}; skipped", path=display))
            out.failed_files.add(source)
            continue
        except UnicodeDecodeError as e:
            line = data.count(b"\n", 0, e.start) + 1
            out.problems.append(
                ProfileError(f"not UTF-8 text: {e.reason}", path=display, line=line)
            )
            out.failed_files.add(source)
            continue
        except OSError as e:
            out.problems.append(ProfileError(f"cannot read: {e.strerror or e}", path=display))
            out.failed_files.add(source)
            continue
        profiles, problems, invalid = parse_profiles(
            text, source=source, display=display, warnings=out.warnings
        )
        if problems:
            out.problems.extend(problems)
            out.failed_files.add(source)
        out.profiles.extend((p, display, p.line or 1) for p in profiles)
        out.invalid.extend(invalid)
    return _check_duplicates(out, tuple(s for s, _ in files))


def _read_regular(file: Path, root: Path | None) -> bytes:
    """The bytes of a regular file of at most :data:`MAX_FILE_BYTES`.

    A symlink is followed only to a file inside ``root`` (the subscribers directory);
    FIFOs, devices and sockets are refused without blocking (``O_NONBLOCK``, then the
    type of the opened file itself), so ``/dev/zero`` or a FIFO never stalls a sync.
    """
    target = file.resolve()
    if root is not None and not target.is_relative_to(root):
        raise _Unreadable("a symlink to a file outside the subscribers directory, not followed")
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except OSError as e:
        raise _Unreadable(f"cannot read: {e.strerror or e}") from e
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise _Unreadable("not a regular file (a FIFO, device or socket)")
        if info.st_size > MAX_FILE_BYTES:
            raise _Unreadable(f"larger than the {MAX_FILE_BYTES // 1024} KiB a profile file may be")
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise _Unreadable(f"larger than the {MAX_FILE_BYTES // 1024} KiB a profile file may be")
    return data


def _check_duplicates(out: _Collected, files: tuple[str, ...]) -> LoadResult:
    """An address in two places is held: neither version is applied."""
    first: dict[str, tuple[str, int]] = {}
    first_source: dict[str, str] = {}
    held: set[str] = set(out.invalid)
    failed: set[str] = set(out.failed_files)
    duplicates: list[ProfileError] = []
    for profile, display, line in out.profiles:
        if profile.email in first:
            where = "{}:{}".format(*first[profile.email])
            duplicates.append(
                ProfileError(
                    f"duplicate email {profile.email} (also in {where}); neither is applied",
                    path=display,
                    line=line,
                    field="email",
                )
            )
            held.add(profile.email)
            failed.add(profile.source or "")
            failed.add(first_source[profile.email])
        else:
            first[profile.email] = (display, line)
            first_source[profile.email] = profile.source or ""
    valid = tuple(p for p, _, _ in out.profiles if p.email not in held)
    return LoadResult(
        profiles=valid,
        problems=tuple(
            sorted(
                [*out.problems, *duplicates],
                key=lambda e: (e.path, e.line or 0),
            )
        ),
        files=files,
        failed_files=frozenset(failed - {""}),
        held_emails=frozenset(held),
        warnings=tuple(out.warnings),
    )
