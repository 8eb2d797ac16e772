"""Tuning a profile from one card: "More like this" and "Fewer like this".

Pure: a profile mapping in, the changed mapping and a sentence saying what changed out.
The rules are few and visible, so a reader can predict them and undo them:

* More: every keyword that matched the paper weighs 1 more; when none matched (a
  paper found by another keyword's field, say), a distinctive phrase of its title
  becomes a keyword.
* Fewer: every matched keyword weighing more than 1 weighs 1 less; when none does, a
  distinctive phrase of the title becomes an exclude.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from newsletter.matching.textnorm import STOP_WORDS, fold

_WORD = re.compile(r"[^\W_][\w'-]*")


def _term(item: object) -> str:
    if isinstance(item, Mapping):
        return str(item.get("term", ""))
    return str(item)


def _weight(item: object) -> float:
    if isinstance(item, Mapping):
        w = item.get("weight", 1)
        return float(w) if isinstance(w, int | float) else 1.0
    return 1.0


def _with_weight(item: object, weight: float) -> str | dict[str, Any]:
    w: int | float = int(weight) if float(weight).is_integer() else weight
    if isinstance(item, Mapping):
        out = dict(item)
        if w == 1:
            out.pop("weight", None)
            if set(out) == {"term"}:
                return str(out["term"])
            return out
        out["weight"] = w
        return out
    return str(item) if w == 1 else {"term": str(item), "weight": w}


def _key(term: str) -> tuple[str, ...]:
    return tuple(fold(w) for w in _WORD.findall(term))


def distinctive_phrase(title: str, taken: Sequence[str] = ()) -> str | None:
    """The first run of two or three words of ``title`` that are not stop words and
    not already in the profile (or, failing that, its longest such word)."""
    words = _WORD.findall(title)
    used = {_key(t) for t in taken}
    runs: list[list[str]] = [[]]
    for w in words:
        if fold(w) in STOP_WORDS or len(w) < 2:
            runs.append([])
        else:
            runs[-1].append(w)
    for run in runs:
        for size in (3, 2):
            for i in range(len(run) - size + 1):
                phrase = " ".join(run[i : i + size])
                if _key(phrase) not in used:
                    return phrase
    singles = sorted({w for run in runs for w in run}, key=len, reverse=True)
    return next((w for w in singles if _key(w) not in used), None)


def tune(
    profile: Mapping[str, Any],
    *,
    direction: Literal["more", "fewer"],
    matched: Sequence[str],
    title: str,
) -> tuple[dict[str, Any], str]:
    """The profile after one feedback click, and what changed, in a sentence."""
    out = copy.deepcopy(dict(profile))
    keywords: list[Any] = list(out.get("keywords") or [])
    exclude: list[Any] = list(out.get("exclude") or [])
    hit = {_key(m) for m in matched}
    changed: list[str] = []
    for i, item in enumerate(keywords):
        if _key(_term(item)) not in hit:
            continue
        old = _weight(item)
        if direction == "more":
            keywords[i] = _with_weight(item, old + 1)
        elif old > 1:
            keywords[i] = _with_weight(item, old - 1)
        else:
            continue
        changed.append(f"{_term(item)!r} now weighs {_fmt(_weight(keywords[i]))}")
    if changed:
        out["keywords"] = keywords
        return out, "; ".join(changed)
    phrase = distinctive_phrase(title, [_term(k) for k in [*keywords, *exclude]])
    if phrase is None:
        return out, "nothing to change"
    if direction == "more":
        out["keywords"] = [*keywords, phrase]
        return out, f"added the keyword {phrase!r}"
    out["exclude"] = [*exclude, phrase]
    return out, f"papers about {phrase!r} are no longer sent"


def _fmt(weight: float) -> str:
    return str(int(weight)) if weight.is_integer() else str(weight)
