"""Profiles: read and validate ``subscribers/**/*.yaml``, with ``file:line`` errors.

``files`` finds and reads the profile files, ``schema`` validates one file's YAML into
:class:`~newsletter.domain.Profile` values, ``yaml_nodes`` keeps the line of every node.
Pure of the database: syncing into it is :mod:`newsletter.pipeline.sync`. May import
``domain``, ``errors`` and ``matching.textnorm`` (the keyword rules).
"""

from __future__ import annotations

from newsletter.profiles.files import LoadResult, display_path, profile_files, read_profiles
from newsletter.profiles.schema import (
    FIELD_NAMES,
    KEYWORD_KEYS,
    PROFILE_KEYS,
    WEEKDAYS,
    email_problem,
    normalise_email,
    parse_profiles,
)

__all__ = [
    "FIELD_NAMES",
    "KEYWORD_KEYS",
    "PROFILE_KEYS",
    "WEEKDAYS",
    "LoadResult",
    "display_path",
    "email_problem",
    "normalise_email",
    "parse_profiles",
    "profile_files",
    "read_profiles",
]
