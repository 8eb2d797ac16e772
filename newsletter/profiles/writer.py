"""Writing self-service profiles: form values in, a validated YAML file out, atomically.

The web app writes only under the self-service folder of ``subscribers_dir``; every
file is checked with the same validator as ``subscribers check`` before it is written,
so a file the web wrote never fails a sync. A write goes to a temporary file in the
same folder, is flushed to disk, then renamed over the old one: a reader (or a crash)
sees the old file or the new one, never half of either.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from newsletter.errors import ProfileError
from newsletter.profiles.schema import FIELD_NAMES, normalise_email, parse_profiles

HEADER = (
    "# Self-service profile: written by the web app when the subscriber confirmed,\n"
    "# rewritten when they change their preferences. Same format as every profile.\n"
)
_FIELD_PREFIX = re.compile(r"^([a-z]+):\s*(.+)$")
_WEIGHT_SUFFIX = re.compile(r"^(.*?)\s*\^\s*([0-9]+(?:\.[0-9]+)?)$")
_SAFE = re.compile(r"[^a-z0-9._+-]")

KEYWORD_SYNTAX = (
    ("deep learning", "a word or phrase, matched with its inflections"),
    ('"BERT"', "in double quotes: exactly as written"),
    ("title: diffusion", "only in the title (also abstract:, author:, category:)"),
    ("retrieval ^2", "counts twice as much (keywords only)"),
)


@dataclass(frozen=True, slots=True)
class Problems:
    """Validation problems of a form, by form field (``""``: the profile as a whole)."""

    by_field: Mapping[str, tuple[str, ...]]

    @property
    def ok(self) -> bool:
        return not self.by_field


def keyword_item(line: str) -> str | dict[str, Any]:
    """One line of the keywords box as the profile's YAML writes it.

    ``title: x`` limits to a field, ``"x"`` is exact, ``x ^2`` weighs; anything else
    is a plain term. Unknown prefixes stay part of the term (``cs: math`` is a term),
    so a colon in a phrase is never lost.
    """
    text = " ".join(line.split())
    item: dict[str, Any] = {}
    m = _WEIGHT_SUFFIX.match(text)
    if m and m.group(1):
        text, item["weight"] = m.group(1), _number(m.group(2))
    m = _FIELD_PREFIX.match(text)
    if m and m.group(1) in FIELD_NAMES:
        item["field"], text = FIELD_NAMES[m.group(1)], m.group(2)
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text, item["exact"] = text[1:-1].strip(), True
    if not item:
        return text
    ordered: dict[str, Any] = _ordered({"term": text, **item})
    return ordered


def keyword_line(item: object) -> str:
    """The inverse of :func:`keyword_item`, for prefilling the form from a profile."""
    if isinstance(item, str):
        return item
    if not isinstance(item, Mapping):
        return str(item)
    text = str(item.get("term", ""))
    if item.get("exact"):
        text = f'"{text}"'
    if item.get("field"):
        text = f"{item['field']}: {text}"
    weight = item.get("weight")
    if weight not in (None, 1, 1.0):
        text = f"{text} ^{_number(str(weight))}"
    return text


def _number(raw: str) -> int | float:
    value = float(raw)
    return int(value) if value.is_integer() else value


def keyword_items(text: str) -> list[str | dict[str, Any]]:
    """Every non-empty line of a keywords box, as profile items."""
    return [keyword_item(line) for line in text.splitlines() if line.strip()]


def profile_document(values: Mapping[str, Any]) -> dict[str, Any]:
    """A profile mapping in the key order of :data:`PROFILE_KEYS`, empty values left out."""
    order = (
        "email", "name", "keywords", "exclude", "max_items",
        "frequency", "weekday", "send_time", "timezone", "active",
    )  # fmt: skip
    out = {k: values[k] for k in order if values.get(k) not in (None, "", [])}
    for key in ("keywords", "exclude"):
        if key in out:
            out[key] = [_ordered(item) for item in out[key]]
    return out


def _ordered(item: Any) -> Any:
    """A keyword mapping in the order people write it (term first), whatever came in."""
    if not isinstance(item, Mapping):
        return item
    keys = ("term", "weight", "exact", "field")
    return {k: item[k] for k in (*keys, *sorted(set(item) - set(keys))) if k in item}


def profile_text(document: Mapping[str, Any]) -> str:
    """The YAML text of one profile, with the self-service header."""
    body = yaml.safe_dump(
        dict(document), sort_keys=False, allow_unicode=True, default_flow_style=False, width=88
    )
    return HEADER + body


def check_text(text: str, *, source: str) -> Problems:
    """Validate a profile's text as ``subscribers check`` would, problems by field."""
    _, problems, _ = parse_profiles(text, source=source)
    return problems_by_field(problems)


def problems_by_field(problems: Sequence[ProfileError]) -> Problems:
    """``keywords.term`` and ``keywords`` both belong to the keywords box."""
    found: dict[str, list[str]] = {}
    for p in problems:
        key = (p.field or "").split(".")[0]
        found.setdefault(key, []).append(p.detail)
    return Problems({k: tuple(v) for k, v in found.items()})


def file_name(email: str) -> str:
    """A stable, readable file name for an address: ``ada_at_example.org.yaml``.

    Characters outside a safe set are replaced, and then a short hash of the address
    keeps two addresses from ever sharing a file.
    """
    email = normalise_email(email)
    local, _, domain = email.rpartition("@")
    safe = _SAFE.sub("-", f"{local}_at_{domain}")[:120]
    if safe != f"{local}_at_{domain}":
        safe = f"{safe}-{hashlib.sha256(email.encode()).hexdigest()[:8]}"
    return f"{safe}.yaml"


def write_atomic(path: Path, text: str, *, create_only: bool = False) -> bool:
    """Write ``text`` to ``path`` through a renamed temporary file; fsync both.

    ``create_only``: leave an existing file alone and return False (a confirmation
    link clicked twice, or by two scanners at once, writes once).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if create_only:
            try:
                os.link(tmp, path)  # fails if the file exists: no window between test and set
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return True


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def self_service_dir(subscribers_dir: Path, folder: str) -> Path:
    return subscribers_dir / folder


def is_self_service(subscribers_dir: Path, folder: str, source_file: str | None) -> bool:
    """Whether a subscriber's ``source_file`` (relative to ``subscribers_dir``) is the
    web's to edit without the operator's switch."""
    if not source_file:
        return False
    return Path(source_file).parts[:1] == Path(folder).parts[:1]
