"""Validating the YAML of subscriber profiles, node by node.

The text is composed into YAML nodes (never constructed as a whole), so every value
keeps the line it was written on and each problem can say ``file:line: field: what``.
All problems are collected; none stops the reading of the rest.
"""

from __future__ import annotations

import difflib
import math
import re
from datetime import time
from functools import cache, lru_cache
from typing import cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import yaml

from newsletter.domain import Field, Frequency, Keyword, Profile
from newsletter.errors import ProfileError
from newsletter.matching.textnorm import only_stop_words, tokenize
from newsletter.profiles.yaml_nodes import LOADER, NodeReader, describe, line_of, syntax_error

PROFILE_KEYS = (
    "email",
    "name",
    "keywords",
    "exclude",
    "max_items",
    "trending",
    "frequency",
    "weekday",
    "send_time",
    "timezone",
    "active",
)
MAX_TRENDING = 50  # trending picks per digest: a digest, not the whole listing
KEYWORD_KEYS = ("term", "weight", "exact", "field")
FIELD_NAMES: dict[str, Field] = {
    "title": "title",
    "abstract": "abstract",
    "summary": "abstract",
    "author": "author",
    "authors": "author",
    "category": "category",
    "categories": "category",
    "tag": "category",
    "tags": "category",
}
# Ranges of the numbers a profile holds (README "Profiles"): far beyond any real use,
# well inside what every database column stores.
MAX_ITEMS_LIMIT = 1000
MAX_WEIGHT = 1000.0
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

# Practical, not RFC 5322: a dot-atom local part (no quoted forms) and a domain of
# letter/digit labels with at least one dot. Matched against the lower-cased address.
_LOCAL_RE = re.compile(r"^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_TIME_RE = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


def normalise_email(raw: str) -> str:
    """The form an address is stored and compared in: stripped and lower-cased.

    The whole address is lower-cased, not just the domain: in practice no mail system
    tells ``Ada@`` from ``ada@``, and two profiles differing only in case must be one
    subscriber (and one unsubscribe).
    """
    return raw.strip().lower()


def email_problem(email: str) -> str | None:
    """Why a normalised address is not usable, or None when it is."""
    if len(email) > 254:
        return "address longer than 254 characters"
    local, at, domain = email.rpartition("@")
    if not at or not local or not domain:
        return "expected an address like name@example.org"
    if len(local) > 64 or not _LOCAL_RE.match(local):
        return "invalid characters before the @"
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        return f"invalid domain {domain!r}"
    labels = ascii_domain.split(".")
    if len(labels) < 2 or not all(_LABEL_RE.match(label) for label in labels):
        return f"invalid domain {domain!r}"
    if labels[-1].isdigit():
        return f"invalid domain {domain!r}"
    return None


@lru_cache(maxsize=1 << 14)
def _folds(term: str) -> tuple[str, ...]:
    """A keyword's folded words (profiles repeat the same keywords a lot)."""
    return tuple(t.fold for t in tokenize(term))


@cache
def _timezones() -> dict[str, str]:
    return {name.lower(): name for name in available_timezones()}


class _FileReader(NodeReader):
    """Validates the profiles of one file, collecting problems as it goes."""

    def __init__(self, source: str, display: str) -> None:
        super().__init__(display)
        self.source = source

    # -- one profile ---------------------------------------------------------------------

    def profile(self, node: yaml.Node) -> tuple[Profile | None, str | None]:
        """The profile of one mapping (None if invalid) and its address if readable."""
        start = self.count
        line = line_of(node)
        if not isinstance(node, yaml.MappingNode):
            self.problem(
                line,
                None,
                "expected a profile (email: ..., keywords: ...), "
                f"got {describe(self.scalar(node))}",
            )
            return None, None
        keys = self.mapping(node, PROFILE_KEYS, "")
        email = self.email(keys.get("email"), line)
        name = self.optional_str(keys.get("name"), "name")
        trending = self.positive_int(keys.get("trending"), "trending", MAX_TRENDING)
        wants_trending = (
            keys.get("trending") is not None and self.scalar(keys["trending"]) is not None
        )
        keywords = self.keywords(
            keys.get("keywords"), "keywords", line, required=not wants_trending
        )
        exclude = self.keywords(keys.get("exclude"), "exclude", line, required=False)
        max_items = self.positive_int(keys.get("max_items"), "max_items", MAX_ITEMS_LIMIT)
        frequency = self.frequency(keys.get("frequency"))
        weekday = self.weekday(keys.get("weekday"))
        send_time = self.send_time(keys.get("send_time"))
        timezone = self.timezone(keys.get("timezone"))
        active = self.boolean(keys.get("active"), "active", default=True)
        if self.count > start or email is None:
            return None, email
        return (
            Profile(
                email=email,
                keywords=keywords,
                name=name,
                exclude=exclude,
                max_items=max_items,
                trending=trending,
                frequency=frequency,
                weekday=weekday,
                send_time=send_time,
                timezone=timezone,
                active=active,
                source=self.source,
                line=line,
            ),
            email,
        )

    def email(self, node: yaml.Node | None, line: int) -> str | None:
        if node is None:
            self.problem(line, "email", "required: the subscriber's address")
            return None
        raw = self.text(node)
        if raw is None or not isinstance(self.scalar(node), str):
            self.problem(
                line_of(node), "email", f"expected an address, got {describe(self.scalar(node))}"
            )
            return None
        email = normalise_email(raw)
        why = email_problem(email)
        if why:
            self.problem(line_of(node), "email", f"invalid email {raw.strip()!r}: {why}")
            return None
        return email

    def optional_str(self, node: yaml.Node | None, name: str) -> str | None:
        if node is None:
            return None
        value = self.scalar(node)
        if value is None:
            return None
        if not isinstance(value, str):
            self.problem(line_of(node), name, f"expected a string, got {describe(value)}")
            return None
        return value.strip() or None

    def positive_int(self, node: yaml.Node | None, name: str, limit: int) -> int | None:
        if node is None:
            return None
        value = self.scalar(node)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(line_of(node), name, f"expected a whole number, got {describe(value)}")
            return None
        if not 1 <= value <= limit:
            self.problem(line_of(node), name, f"expected 1 to {limit}, got {value}")
            return None
        return value

    def boolean(self, node: yaml.Node | None, name: str, *, default: bool) -> bool:
        if node is None:
            return default
        value = self.scalar(node)
        if not isinstance(value, bool):
            self.problem(line_of(node), name, f"expected true or false, got {describe(value)}")
            return default
        return value

    def frequency(self, node: yaml.Node | None) -> Frequency:
        if node is None:
            return "daily"
        value = self.scalar(node)
        if isinstance(value, str) and value.strip().lower() in ("daily", "weekly"):
            return cast(Frequency, value.strip().lower())
        self.problem(line_of(node), "frequency", f"expected daily or weekly, got {value!r}")
        return "daily"

    def weekday(self, node: yaml.Node | None) -> int:
        if node is None:
            return 0
        value = self.scalar(node)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 6:
            return value
        if isinstance(value, str):
            low = value.strip().lower()
            for i, day in enumerate(WEEKDAYS):
                if low == day or (len(low) >= 3 and day.startswith(low)):
                    return i
        self.problem(
            line_of(node),
            "weekday",
            f"expected a day name (monday .. sunday) or 0-6 with 0 = monday, got {value!r}",
        )
        return 0

    def send_time(self, node: yaml.Node | None) -> time | None:
        if node is None or self.scalar(node) is None:
            return None
        raw = self.text(node)
        m = _TIME_RE.match(raw.strip()) if raw is not None else None
        if m is None:
            shown = raw if raw is not None else describe(self.scalar(node))
            self.problem(line_of(node), "send_time", f'expected a time like "07:30", got {shown!r}')
            return None
        return time(int(m.group(1)), int(m.group(2)))

    def timezone(self, node: yaml.Node | None) -> str | None:
        if node is None or self.scalar(node) is None:
            return None
        value = self.scalar(node)
        if not isinstance(value, str) or not value.strip():
            self.problem(
                line_of(node),
                "timezone",
                f"expected an IANA name like Europe/Berlin, got {value!r}",
            )
            return None
        name = value.strip()
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            proper = _timezones().get(name.lower())
            hint = f" (did you mean {proper!r}?)" if proper else _suggest_zone(name)
            self.problem(line_of(node), "timezone", f"unknown timezone {name!r}{hint}")
            return None
        return name

    # -- keywords ------------------------------------------------------------------------

    def keywords(
        self, node: yaml.Node | None, name: str, line: int, *, required: bool
    ) -> tuple[Keyword, ...]:
        if node is None or (isinstance(node, yaml.ScalarNode) and self.scalar(node) is None):
            if required:
                self.problem(
                    line if node is None else line_of(node),
                    name,
                    "required: a list of at least one keyword "
                    "(or trending: N for the N most upvoted papers alone)",
                )
            return ()
        if not isinstance(node, yaml.SequenceNode):
            self.problem(line_of(node), name, f"expected a list, got {describe(self.scalar(node))}")
            return ()
        if required and not node.value:
            self.problem(
                line_of(node), name, "expected at least one keyword (or trending: N alone)"
            )
        found: list[Keyword] = []
        seen: dict[tuple[tuple[str, ...], bool, Field | None], int] = {}
        for item in node.value:
            kw = self.keyword(item, name, allow_weight=name == "keywords")
            if kw is None:
                continue
            folds = _folds(kw.term)
            key = (folds, kw.exact, kw.field)
            if key in seen:
                self.problem(
                    line_of(item), name, f"repeated keyword {kw.term!r} (first on line {seen[key]})"
                )
                continue
            seen[key] = line_of(item)
            found.append(kw)
        return tuple(found)

    def keyword(self, node: yaml.Node, name: str, *, allow_weight: bool) -> Keyword | None:
        if isinstance(node, yaml.ScalarNode):
            term = self.term(node, name)
            return Keyword(term) if term else None
        if not isinstance(node, yaml.MappingNode):
            self.problem(line_of(node), name, "expected a keyword, or a mapping with term:")
            return None
        start = self.count
        allowed = KEYWORD_KEYS if allow_weight else tuple(k for k in KEYWORD_KEYS if k != "weight")
        keys = self.mapping(node, allowed, f"{name}.")
        if "term" not in keys:
            self.problem(line_of(node), f"{name}.term", "required: the word or phrase to match")
            return None
        term = self.term(keys["term"], f"{name}.term")
        weight = 1.0
        if "weight" in keys:
            value = self.scalar(keys["weight"])
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or not 0 < value <= MAX_WEIGHT
            ):
                self.problem(
                    line_of(keys["weight"]),
                    f"{name}.weight",
                    f"expected a number above 0 and at most {MAX_WEIGHT:g}, got {value!r}",
                )
            else:
                weight = float(value)
        exact = self.boolean(keys.get("exact"), f"{name}.exact", default=False)
        field_name: Field | None = None
        if "field" in keys:
            value = self.scalar(keys["field"])
            key = value.strip().lower() if isinstance(value, str) else None
            if key in FIELD_NAMES:
                field_name = FIELD_NAMES[key]
            else:
                self.problem(
                    line_of(keys["field"]),
                    f"{name}.field",
                    f"expected title, abstract, author or category, got {value!r}",
                )
        if self.count > start or not term:
            return None
        return Keyword(term, weight=weight, exact=exact, field=field_name)

    def term(self, node: yaml.Node, name: str) -> str | None:
        raw = self.text(node)
        if raw is None:
            self.problem(
                line_of(node), name, f"expected a word or phrase, got {describe(self.scalar(node))}"
            )
            return None
        if self.scalar(node) is None:
            self.problem(line_of(node), name, "empty keyword")
            return None
        # A plain scalar is taken as written: "2024", "yes" or "1e3" are words here.
        if (
            isinstance(node, yaml.ScalarNode)
            and not node.style  # plain: libyaml says '', PyYAML None
            and node.end_mark.line > node.start_mark.line
            and re.search(r"\s-\s", raw)
        ):
            self.warn(
                line_of(node),
                name,
                f"keyword {' '.join(raw.split())!r} runs on over a line starting with '-': "
                "is that line indented one space too far (meant as its own keyword)?",
            )
        term = " ".join(raw.split())
        if not term:
            self.problem(line_of(node), name, "empty keyword")
            return None
        folds = _folds(term)
        if not folds:
            self.problem(line_of(node), name, f"keyword {term!r} has no letters or digits")
            return None
        if only_stop_words(folds):
            self.problem(
                line_of(node),
                name,
                f"keyword {term!r} has only stop words (like 'the', 'of'): it would match nothing",
            )
            return None
        return term


def _suggest_zone(name: str) -> str:
    zones = _timezones()
    close = difflib.get_close_matches(name.lower(), list(zones), n=1, cutoff=0.75)
    return f" (did you mean {zones[close[0]]!r}?)" if close else ""


def parse_profiles(
    text: str,
    *,
    source: str,
    display: str | None = None,
    warnings: list[ProfileError] | None = None,
) -> tuple[list[Profile], list[ProfileError], list[str]]:
    """The profiles in one file's text, its problems, and the addresses of invalid ones.

    Likely typos that still parse are appended to ``warnings`` (they block nothing).

    A file holds one profile, a list of them, or several YAML documents of either.
    """
    display = display or source
    reader = _FileReader(source, display)
    try:
        documents = list(yaml.compose_all(text, Loader=LOADER))
    except yaml.YAMLError as e:
        line, message = syntax_error(e, text)
        reader.problem(line, None, message)
        return [], reader.problems, []
    if warnings is not None:
        reader.warnings = warnings
    items: list[yaml.Node] = []
    for doc in documents:
        if doc is None:
            continue
        if isinstance(doc, yaml.SequenceNode):
            items.extend(doc.value)
        else:
            items.append(doc)
    if not items:
        reader.problem(1, None, "no profile in this file (expected email:, keywords: ...)")
    profiles: list[Profile] = []
    invalid: list[str] = []
    for item in items:
        profile, email = reader.profile(item)
        if profile is not None:
            profiles.append(profile)
        elif email is not None:
            invalid.append(email)
    return profiles, reader.problems, invalid
