"""Confirmation tokens for double opt-in: signed, expiring, carrying the pending profile.

Nothing is stored before the click, so the link itself holds the subscription.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import struct
import zlib
from collections.abc import Mapping

from newsletter.errors import TokenError
from newsletter.tokens.links import _TAG_BYTES, _subkey

_CONFIRM_FORMAT = 1
_CONFIRM_MAX_CHARS = 4096
_EXPIRY = struct.Struct(">Q")


def _confirm_tag(secret: bytes, list_id: str, body: bytes) -> bytes:
    msg = bytes([_CONFIRM_FORMAT]) + list_id.encode("utf-8") + b"\x00" + body
    return hmac.digest(_subkey(secret, b"confirm"), msg, "sha256")[:_TAG_BYTES]


def make_confirm_token(
    secret: bytes, *, list_id: str, payload: Mapping[str, object], expires_at: int
) -> str:
    """A signed, expiring token that carries a whole pending subscription.

    Double opt-in keeps nothing before the click, so the link itself holds what the
    form asked for (``payload``: JSON values) and when it stops working (``expires_at``,
    Unix seconds). It is signed, not encrypted: it only reaches the address it names.
    """
    if not secret:
        raise TokenError("empty secret")
    data = zlib.compress(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    body = _EXPIRY.pack(expires_at) + data
    raw = bytes([_CONFIRM_FORMAT]) + body + _confirm_tag(secret, list_id, body)
    token = base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
    if len(token) > _CONFIRM_MAX_CHARS:
        raise TokenError("subscription too large for a link")
    return token


def read_confirm_token(secret: bytes, token: str, *, list_id: str, now: int) -> dict[str, object]:
    """Check and open a :func:`make_confirm_token` token; :class:`TokenError` if it is
    malformed, not ours, or expired (the message says which)."""
    if not secret:
        raise TokenError("empty secret")
    if not token or len(token) > _CONFIRM_MAX_CHARS or not token.isascii():
        raise TokenError("malformed token")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError) as e:
        raise TokenError("malformed token") from e
    if len(raw) < 1 + _EXPIRY.size + _TAG_BYTES or raw[0] != _CONFIRM_FORMAT:
        raise TokenError("malformed token")
    body, tag = raw[1:-_TAG_BYTES], raw[-_TAG_BYTES:]
    if not hmac.compare_digest(_confirm_tag(secret, list_id, body), tag):
        raise TokenError("invalid token signature")
    (expires_at,) = _EXPIRY.unpack(body[: _EXPIRY.size])
    if now >= expires_at:
        raise TokenError("expired confirmation link")
    try:
        payload = json.loads(zlib.decompress(body[_EXPIRY.size :]))
    except (zlib.error, ValueError) as e:
        raise TokenError("malformed token") from e
    if not isinstance(payload, dict):
        raise TokenError("malformed token")
    return payload
