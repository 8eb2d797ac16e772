"""Editing an operator-written profile file in place, keeping its comments and layout.

With ``[subscribe] edit_operator_files`` the web may change a file the operator wrote
by hand (and keeps in git). Rewriting it from the form would drop the comments, the
order and the quoting the operator chose, so such an edit goes through ruamel.yaml's
round-trip mode instead: the file is read with its comments, only the subscriber's own
mapping is touched (a file may hold several profiles, or several YAML documents), and
only the keys whose values changed; a list's unchanged items stay as written.
"""

from __future__ import annotations

import difflib
import io
import re
from collections.abc import Collection, Mapping
from itertools import pairwise
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from newsletter.errors import ProfileError
from newsletter.profiles.schema import normalise_email

_KEY_LINE = re.compile(r"^( *)[^\s#-][^:]*:\s*(#.*)?$")
_ITEM_LINE = re.compile(r"^( *)- ")


def _indent(text: str) -> tuple[int, int]:
    """(sequence indent, dash offset) as the file writes its block lists (2, 0 if none)."""
    lines = text.splitlines()
    for before, line in pairwise(lines):
        key, item = _KEY_LINE.match(before), _ITEM_LINE.match(line)
        if key and item:
            offset = len(item.group(1)) - len(key.group(1))
            if offset >= 0:
                return offset + 2, offset
    return 2, 0


def _yaml(text: str) -> YAML:
    y = YAML(typ="rt")
    y.preserve_quotes = True
    y.width = 4096  # never fold a long line the operator wrote on one
    sequence, offset = _indent(text)
    y.indent(mapping=2, sequence=sequence, offset=offset)
    return y


def _plain(value: Any) -> Any:
    """A round-trip value as plain Python, to compare with what the form made."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value


def _merge_list(old: CommentedSeq, new: list[Any]) -> None:
    """``old`` made equal to ``new`` item by item: equal items (and their comments) stay."""
    for i, item in enumerate(new):
        if i >= len(old):
            old.append(item)
        elif _plain(old[i]) != item:
            _replace_item(old, i, item)
    del old[len(new) :]


def _replace_item(seq: CommentedSeq, i: int, item: Any) -> None:
    """``seq[i] = item``; a keyword that becomes a mapping (``graph`` -> ``term: graph,
    weight: 2``) keeps the comment that followed it, after its last line."""
    if not isinstance(item, Mapping) or not item or isinstance(seq[i], Mapping):
        seq[i] = item
        return
    mapping = CommentedMap(item)
    token = seq.ca.items.pop(i, None)
    if token and token[0] is not None:
        mapping.ca.items[list(item)[-1]] = [None, None, token[0], None]
    seq[i] = mapping


def _profile_maps(docs: list[Any]) -> list[CommentedMap]:
    out: list[CommentedMap] = []
    for doc in docs:
        if isinstance(doc, CommentedMap):
            out.append(doc)
        elif isinstance(doc, list):
            out.extend(d for d in doc if isinstance(d, CommentedMap))
    return out


def find_profile(text: str, email: str) -> dict[str, Any] | None:
    """The profile of ``email`` in a file's text, as plain values (None: not there)."""
    docs = [d for d in _yaml(text).load_all(text) if d is not None]
    for m in _profile_maps(docs):
        if normalise_email(str(m.get("email", ""))) == normalise_email(email):
            plain = _plain(m)
            return plain if isinstance(plain, dict) else None
    return None


def update_profile(
    text: str,
    email: str,
    document: Mapping[str, Any],
    *,
    source: str,
    managed: Collection[str],
) -> str:
    """``text`` with the profile of ``email`` changed to ``document``: changed keys set
    where they are, new ones appended, ``managed`` keys that ``document`` leaves out
    removed; every other key, the other profiles, comments, order and quoting as they
    were."""
    y = _yaml(text)
    docs = list(y.load_all(text))
    target = None
    for m in _profile_maps([d for d in docs if d is not None]):
        if normalise_email(str(m.get("email", ""))) == normalise_email(email):
            target = m
            break
    if target is None:
        raise ProfileError(f"no profile for {email} in this file", path=source, field="email")
    for key in [k for k in target if k in managed and k not in document]:
        del target[key]
    for key, value in document.items():
        if key not in managed:
            continue
        if key in target and _plain(target[key]) == value:
            continue
        if key in target and isinstance(target[key], CommentedSeq) and isinstance(value, list):
            _merge_list(target[key], value)
        else:
            target[key] = value
    changed = _dump(y, docs)
    spliced = _splice(text, _dump(y, list(_yaml(text).load_all(text))), changed)
    same = list(yaml.safe_load_all(spliced)) == list(yaml.safe_load_all(changed))
    return spliced if same else changed


def _dump(y: YAML, docs: list[Any]) -> str:
    out = io.StringIO()
    if len(docs) == 1:
        y.dump(docs[0], out)
    else:
        y.dump_all(docs, out)
    return out.getvalue()


def _indent_of(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _reindent(line: str, delta: int) -> str:
    if delta >= 0:
        return " " * delta + line if line.strip() else line
    return line[min(-delta, _indent_of(line)) :]


def _splice(original: str, baseline: str, changed: str) -> str:
    """``original`` with only the lines that differ between ruamel's dump of the file as
    it was (``baseline``) and as changed: ruamel writes every list at one indentation,
    the operator may not, so its dump is used for the changed lines only (indented as
    the original line they replace or follow), every other line stays byte for byte."""
    o = original.splitlines(keepends=True)
    b = baseline.splitlines(keepends=True)
    c = changed.splitlines(keepends=True)

    def key(line: str) -> str:
        return " ".join(line.split())

    align = difflib.SequenceMatcher(None, [key(x) for x in b], [key(x) for x in o], autojunk=False)
    to_o = {m.a + k: m.b + k for m in align.get_matching_blocks() for k in range(m.size)}
    out: list[str] = []
    pos = 0
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, b, c, autojunk=False).get_opcodes():
        if op == "equal":
            continue
        ref = i1 if op != "insert" else i1 - 1
        if op == "insert":
            start = end = to_o[ref] + 1 if ref in to_o else (0 if ref < 0 else -1)
        else:
            mapped = [to_o.get(i, -1) for i in range(i1, i2)]
            if -1 in mapped or mapped != list(range(mapped[0], mapped[0] + len(mapped))):
                return changed
            start, end = mapped[0], mapped[-1] + 1
        if start < pos or (ref >= 0 and ref not in to_o):
            return changed
        delta = _indent_of(o[to_o[ref]]) - _indent_of(b[ref]) if ref >= 0 else 0
        out.extend(o[pos:start])
        out.extend(_reindent(line, delta) for line in c[j1:j2])
        pos = end
    out.extend(o[pos:])
    return "".join(out)
