"""Reading YAML as nodes, so every value keeps the line it was written on.

The text is composed into nodes (never constructed as a whole); :class:`NodeReader`
types scalars one at a time, checks mapping keys (unknown, repeated, ``<<:`` merges)
and collects problems as ``file:line: field: what`` without stopping at the first.
What the keys mean is the caller's business (see :mod:`newsletter.profiles.schema`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from newsletter.errors import ProfileError

# libyaml's loader when present (ten times faster on 10,000 files); both are the safe
# loader: plain data only, never Python objects.
LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"


def suggest(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for a close choice, else nothing."""
    close = difflib.get_close_matches(word.lower(), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def describe(value: Any) -> str:
    """What a value is, in the words a problem message uses (``got a list``)."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def line_of(node: yaml.Node) -> int:
    """The 1-based line a node starts on (marks are 0-based)."""
    return int(node.start_mark.line) + 1


def syntax_error(e: yaml.YAMLError, text: str) -> tuple[int | None, str]:
    """The line and a readable message of a YAML error (libyaml's marks are 0-based)."""
    if isinstance(e, yaml.MarkedYAMLError):
        mark = e.problem_mark or e.context_mark
        tab = _tab_line(text, mark.line if mark else None)
        if tab is not None:
            return tab, "YAML syntax error: a tab used for indentation (YAML indents with spaces)"
        message = f"YAML syntax error: {e.problem or e.context or 'invalid YAML'}"
        if e.problem and e.context:
            where = f" on line {e.context_mark.line + 1}" if e.context_mark else ""
            message += f" ({e.context}{where})"
        return (mark.line + 1 if mark else None), message
    if isinstance(e, yaml.reader.ReaderError):
        return text.count("\n", 0, e.position) + 1, f"YAML syntax error: {e.reason}"
    return None, f"YAML syntax error: {e}"


def _tab_line(text: str, line: int | None) -> int | None:
    """The 1-based line (the error's, or the one before) indented with a tab, if any."""
    if line is None:
        return None
    lines = text.splitlines()
    for i in (line, line - 1):
        if 0 <= i < len(lines):
            indent = lines[i][: len(lines[i]) - len(lines[i].lstrip(" \t"))]
            if "\t" in indent:
                return i + 1
    return None


class NodeReader:
    """Types and checks the nodes of one file, collecting problems as it goes."""

    def __init__(self, display: str) -> None:
        self.display = display
        self.problems: list[ProfileError] = []
        self.warnings: list[ProfileError] = []
        self._reported: set[tuple[int | None, str | None, str]] = set()
        self.count = 0
        self.constructor = SafeConstructor()

    def problem(self, line: int | None, fieldname: str | None, message: str) -> None:
        # A key shared through an alias would otherwise be reported once per profile;
        # ``count`` still sees every one, so each profile using it is invalid.
        self.count += 1
        key = (line, fieldname, message)
        if key not in self._reported:
            self._reported.add(key)
            self.problems.append(
                ProfileError(message, path=self.display, line=line, field=fieldname)
            )

    def warn(self, line: int | None, fieldname: str | None, message: str) -> None:
        """A likely typo that still parses: reported, blocks nothing."""
        self.warnings.append(
            ProfileError(f"warning: {message}", path=self.display, line=line, field=fieldname)
        )

    def scalar(self, node: yaml.Node) -> Any:
        """A scalar's value as YAML types it; lists and mappings as plain markers."""
        if isinstance(node, yaml.SequenceNode):
            return []
        if isinstance(node, yaml.MappingNode):
            return {}
        if node.tag == _STR_TAG:
            return node.value  # most values: no need for the constructor
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.YAMLError:
            return node.value  # e.g. a timestamp YAML cannot build: report it as text

    @staticmethod
    def text(node: yaml.Node) -> str | None:
        """A scalar exactly as written (``7:30`` stays text, ``yes`` is not true)."""
        if isinstance(node, yaml.ScalarNode):
            return str(node.value)
        return None

    def mapping(
        self, node: yaml.MappingNode, allowed: tuple[str, ...], prefix: str
    ) -> dict[str, yaml.Node]:
        """Keys to value nodes; unknown and repeated keys are problems.

        ``<<: *defaults`` merge keys work as in YAML: the mapping's own keys win.
        """
        first_line: dict[str, int] = {}
        for key_node, _value in node.value:
            key = self.scalar(key_node)
            if key_node.tag == _MERGE_TAG or not isinstance(key, str):
                continue
            if key in first_line:
                self.problem(
                    line_of(key_node),
                    f"{prefix}{key}",
                    f"repeated key (first on line {first_line[key]})",
                )
            else:
                first_line[key] = line_of(key_node)
        try:
            self.constructor.flatten_mapping(node)
        except yaml.YAMLError as e:
            self.problem(line_of(node), prefix.rstrip(".") or None, f"invalid merge key: {e}")
        out: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = self.scalar(key_node)
            if not isinstance(key, str):
                self.problem(line_of(key_node), None, f"expected a key name, got {key!r}")
                continue
            if key not in allowed:
                hint = suggest(key, allowed) or f" (expected one of: {', '.join(allowed)})"
                self.problem(line_of(key_node), f"{prefix}{key}", f"unknown key{hint}")
                continue
            out[key] = value_node
        return out
