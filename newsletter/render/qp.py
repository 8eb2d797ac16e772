"""Quoted-printable bodies, encoded a line at a time and mostly from memory. Pure.

``binascii.b2a_qp`` (text mode) treats every line on its own: a line's output depends
on that line's bytes only (it looks one byte ahead, and a line's last byte sees the LF;
the end-of-data rules only touch a last line without LF, which bodies never have). So
a body's encoding is its lines' encodings, each followed by CRLF, and a line that recurs
(markup, styles, an entry's wrapped abstract) need not be encoded again:
:func:`encoded_line` remembers them, and the template filler (``shape_fill``) encodes
the lines inside its literal markup once, when a shape is first used.

Encoding a line is escaping (``=`` and non-ASCII bytes as ``=XX``; a line with control
characters is left to binascii) and folding at 76 columns, done here with bytes methods
and one regular expression, so the static markup around a line's values can be escaped
once too. ``tests/test_mime.py`` checks all of it against binascii.
"""

from __future__ import annotations

import binascii
import codecs
import re

# Lines remembered: two generations of at most _GENERATION_BYTES (keys and values), so
# a bounded and roughly least-recently-used memory.
_GENERATION_BYTES = 16_000_000
_new: dict[str, bytes] = {}
_old: dict[str, bytes] = {}
_new_bytes = 0
# Bytes a line may hold for the fast encoder: printable ASCII, TAB and non-ASCII (the
# rest, control characters, make binascii do the line).
_PLAIN = bytes(b for b in range(256) if 32 <= b != 127 or b == 9)
_HEX = [f"={b:02X}" for b in range(256)]
# The longest start of an escaped line that fits a 76-column line with its soft break
# "=": 73 bytes, and the next one or two unless an escape ("=XX") starts there.
_CHUNK = re.compile(rb".{73}(?:[^=][^=]?)?", re.DOTALL)


def _escape_run(e: UnicodeError) -> tuple[str, int]:
    """Decoding error handler: a run of non-ASCII bytes as ``=XX`` escapes."""
    assert isinstance(e, UnicodeDecodeError)
    data, end = e.object, e.start
    while end < len(data) and data[end] >= 128:
        end += 1
    return "".join([_HEX[b] for b in data[e.start : end]]), end


codecs.register_error("newsletter.render.qp", _escape_run)


def escaped(raw: bytes) -> bytes | None:
    """``raw`` with every byte quoted-printable escapes (``=``, non-ASCII) escaped, or None
    when it holds a control character (other than TAB)."""
    if raw.translate(None, _PLAIN):
        return None
    e = raw.replace(b"=", b"=3D")
    if not e.isascii():
        e = e.decode("ascii", "newsletter.render.qp").encode("ascii")
    return e


def folded(e: bytes) -> bytes:
    """An :func:`escaped` line cut as binascii cuts it: lines of at most 75 characters
    and the soft break's ``=``, an escape never split, the line's last character allowed
    in the 76th column; trailing whitespace escaped. Every ``=`` in ``e`` starts an
    escape."""
    n = len(e)
    if n > 76 or (n == 76 and e[73] == 61):
        chunks = _CHUNK.findall(e)
        size = len(chunks[-1])
        rest = n - sum(map(len, chunks))
        if size + rest < 76 or (size + rest == 76 and e[n - 3] != 61):
            if rest:  # binascii stops cutting once the rest fits: no cut before it
                chunks[-1] = chunks[-1] + e[n - rest :]
        else:
            chunks.append(e[n - rest :])
        e = b"=\r\n".join(chunks)
    last = e[-1:]
    if last == b" ":
        e = e[:-1] + b"=20"
    elif last == b"\t":
        e = e[:-1] + b"=09"
    return e


def qp_line(line: bytes) -> bytes:
    """``b2a_qp(line + LF, istext=True)`` without its LF; soft line breaks as ``=CRLF``."""
    e = escaped(line) if line != b"." else None
    if e is None:
        encoded = binascii.b2a_qp(line + b"\n", quotetabs=False, istext=True, header=False)
        return encoded[:-1].replace(b"\n", b"\r\n")
    return folded(e)


BAD_LINE = b"\x00"  # what encoded_line gives for a line it cannot encode (QP never has NUL)


def encoded_line(
    line: str, pre: bytes | None = b"", pre_n: int = 0, post: bytes | None = b"", post_n: int = 0
) -> bytes:
    """The encoding of one line of a body, with its CRLF; remembered.

    ``pre`` and ``post`` are the :func:`escaped` forms (None: none) of the line's first
    ``pre_n`` and last ``post_n`` characters, when the caller knows them: the static
    markup around a line's values, escaped once. A line that is not valid UTF-8 (a lone
    surrogate) gives :data:`BAD_LINE`: the caller lets the MIME builder do that body.
    """
    global _new, _old, _new_bytes
    got = _new.get(line)
    if got is None:
        got = _old.get(line)
        if got is None:
            try:
                middle = line[pre_n : len(line) - post_n]
                e = escaped(middle.encode("utf-8"))
                if e is None or pre is None or post is None or line == ".":
                    got = qp_line(line.encode("utf-8")) + b"\r\n"
                else:
                    got = folded(pre + e + post) + b"\r\n"
            except UnicodeEncodeError:
                return BAD_LINE
        _new_bytes += len(line) + len(got)
        if _new_bytes > _GENERATION_BYTES:
            _old, _new, _new_bytes = _new, {}, 0
        _new[line] = got
    return got


def quoted_printable(raw: bytes) -> bytes:
    """``b2a_qp(raw, istext=True)`` with CRLF line ends, for ``raw`` with LF line ends
    (and no CR)."""
    lines = raw.split(b"\n")
    last = lines.pop()
    out = [qp_line(line) for line in lines]
    if last:  # no final LF: binascii's end-of-data rules apply to this line
        encoded = binascii.b2a_qp(last, quotetabs=False, istext=True, header=False)
        out.append(encoded.replace(b"\n", b"\r\n"))
    else:
        out.append(b"")
    return b"\r\n".join(out)
