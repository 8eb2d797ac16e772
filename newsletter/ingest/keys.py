"""Dedupe keys: what makes two entries, from any feed or source, the same paper or page.

``arxiv:<id>`` first (so a paper seen in an arXiv feed and on Hugging Face is one
entry), else the canonical link, else the normalised title.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MAX_KEY = 512  # entries.dedupe_key
MAX_GUID = 1024  # entry_sources.guid

_ARXIV_ID = r"(?P<id>\d{4}\.\d{4,5}|[a-z][a-z\-]*(?:\.[A-Z]{2})?/\d{7})(?:v\d+)?"
_ARXIV_RE = re.compile(
    r"(?:arxiv\.org/(?:abs|pdf|html|format)/|arxiv(?:\.org)?:|huggingface\.co/papers/)"
    + _ARXIV_ID
    + r"(?![\d.])",
    re.IGNORECASE,
)
_TRACKING = ("utm_", "mc_", "_hs")
_TRACKING_EXACT = frozenset({"fbclid", "gclid", "dclid", "msclkid", "yclid", "igshid", "ref_src"})


def arxiv_id(*texts: str) -> str | None:
    """The arXiv identifier without its version, from an arXiv/HF URL or an oai id."""
    for text in texts:
        m = _ARXIV_RE.search(text or "")
        if m:
            return m.group("id").lower()
    return None


def canonical_link(url: str) -> str:
    """A URL reduced to what identifies the page: no fragment, trackers or trailing slash.

    http and https count as one; query parameters are sorted.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme == "http":
        scheme = "https"
    host = (parts.hostname or "").lower().rstrip(".")
    port = parts.port if parts.port not in (None, 80, 443) else None
    netloc = f"{host}:{port}" if port else host
    path = parts.path.rstrip("/")
    query = sorted(
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if not k.lower().startswith(_TRACKING) and k.lower() not in _TRACKING_EXACT
    )
    return urlunsplit((scheme, netloc, path, urlencode(query), ""))


def normalise_title(title: str) -> str:
    """Case, accents, punctuation and spacing removed: what two copies of a title share."""
    decomposed = unicodedata.normalize("NFKD", title.casefold())
    letters = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(re.sub(r"[\W_]+", " ", letters).split())


def dedupe_key(*, guid: str, link: str, title: str) -> str:
    """``arxiv:<id>``, else ``url:<canonical link>``, else ``title:<normalised title>``."""
    found = arxiv_id(guid, link)
    if found:
        return f"arxiv:{found}"
    if link:
        return fit("url:" + canonical_link(link), MAX_KEY)
    norm = normalise_title(title)
    if norm:
        return fit("title:" + norm, MAX_KEY)
    return fit("guid:" + guid, MAX_KEY)


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def fit(value: str, limit: int) -> str:
    """Keep keys within their column: a long one becomes its prefix plus a hash."""
    if len(value) <= limit:
        return value
    return value[: limit - 34] + "#" + digest(value)
