"""Link tokens: signed, opaque, never expiring, revocable (unsubscribe, preferences,
feedback and View-in-browser links).

A token is ``base64url(FORMAT || ciphertext || tag)`` (29 bytes, 39 characters), built
as a deterministic authenticated encryption in the SIV style with HMAC-SHA256 as the
only primitive:

* ``plaintext = subscriber_id (u64) || token_version (u32)``;
* ``tag = HMAC(k_mac, FORMAT || list_id || salt || plaintext)[:16]`` — the list id and
  the subscriber's random ``token_salt`` are bound as associated data, so a token names
  its list and one particular subscriber row without carrying either;
* ``ciphertext = plaintext XOR HMAC(k_enc, tag)[:12]`` — the tag is the synthetic IV.

Neither the email nor the database id appears in clear: without the key the token is
indistinguishable from random bytes. ``k_mac`` and ``k_enc`` are derived from the
secret with HMAC and distinct labels. The check recomputes the tag and compares it
with :func:`hmac.compare_digest`. Tokens are deterministic, so a subscriber's link is
stable (previews are reproducible, golden files stay golden); bumping the
subscriber's ``token_version`` revokes every link made before.

The salt is why a rebuilt database does not honour old links: ids are reused from 1,
the secret may well be the same, but every new row gets a fresh salt, so a link sent
to the old subscriber 7 does not open the new one. Format 1 tokens (before the salt)
are refused.

The secret comes from the environment variable named by ``[newsletter]
secret_key_env`` (see :func:`secret_from_settings`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from newsletter.errors import TokenError

FORMAT = 2  # 1: before the per-subscriber salt; refused
_PLAIN = struct.Struct(">QI")  # subscriber_id, token_version
_TAG_BYTES = 16
_TOKEN_BYTES = 1 + _PLAIN.size + _TAG_BYTES
# Preview-only key: public, so anyone could forge tokens with it. It is never used
# when real mail goes out (see secret_from_settings).


@dataclass(frozen=True, slots=True)
class TokenData:
    """What a valid token names: the subscriber and the link generation."""

    subscriber_id: int
    version: int


@lru_cache(maxsize=16)
def _subkey(secret: bytes, label: bytes) -> bytes:
    # Derived once per secret: a send makes a token for every subscriber.
    return hmac.digest(secret, b"newsletter/unsubscribe-token/" + label, "sha256")


def _tag(secret: bytes, list_id: str, salt: str, plain: bytes) -> bytes:
    msg = (
        bytes([FORMAT]) + list_id.encode("utf-8") + b"\x00" + salt.encode("utf-8") + b"\x00" + plain
    )
    return hmac.digest(_subkey(secret, b"mac"), msg, "sha256")[:_TAG_BYTES]


def _keystream(secret: bytes, tag: bytes) -> bytes:
    return hmac.digest(_subkey(secret, b"enc"), tag, "sha256")[: _PLAIN.size]


def _xor(a: bytes, b: bytes) -> bytes:
    if len(a) != len(b):
        raise ValueError("_xor needs equal lengths")
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def make_token(secret: bytes, *, subscriber_id: int, list_id: str, version: int, salt: str) -> str:
    """The opaque token for one subscriber row of one list at one link generation."""
    if not secret:
        raise TokenError("empty secret")
    if not salt:
        raise TokenError("empty token salt")
    if not 0 <= subscriber_id < 2**64 or not 0 <= version < 2**32:
        raise TokenError(f"subscriber id or token version out of range: {subscriber_id}, {version}")
    plain = _PLAIN.pack(subscriber_id, version)
    tag = _tag(secret, list_id, salt, plain)
    raw = bytes([FORMAT]) + _xor(plain, _keystream(secret, tag)) + tag
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def read_token(
    secret: bytes, token: str, *, list_id: str, salt_of: Callable[[int], str | None]
) -> TokenData:
    """Check and open a token; :class:`TokenError` if it is malformed or not ours.

    ``salt_of`` gives the stored ``token_salt`` of the subscriber id the token opens to
    (None: no such row, so nothing to check against). The check needs it, so it is
    asked before the signature is known good; the id alone unlocks nothing.

    It does not know about revocation: the caller compares ``version`` with the
    subscriber's current ``token_version``.
    """
    if not secret:
        raise TokenError("empty secret")
    if not token or len(token) > 64 or not token.isascii():
        raise TokenError("malformed token")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError) as e:
        raise TokenError("malformed token") from e
    if len(raw) != _TOKEN_BYTES:
        raise TokenError("malformed token")
    if raw[0] == 1:
        raise TokenError("link from before tokens were bound to the subscriber (format 1)")
    if raw[0] != FORMAT:
        raise TokenError("malformed token")
    cipher, tag = raw[1 : 1 + _PLAIN.size], raw[1 + _PLAIN.size :]
    plain = _xor(cipher, _keystream(secret, tag))
    subscriber_id, version = _PLAIN.unpack(plain)
    salt = salt_of(subscriber_id)
    if not salt or not hmac.compare_digest(_tag(secret, list_id, salt, plain), tag):
        raise TokenError("invalid token signature")
    return TokenData(subscriber_id=subscriber_id, version=version)


def form_key(secret: bytes, token: str, action: Literal["unsubscribe", "resubscribe"]) -> str:
    """A hidden form value bound to one token and one action.

    It marks a POST as coming from our own page (source ``page``) rather than from a
    mail provider's one-click call; a cross-site form could not forge it without the
    secret. The token itself stays the capability: whoever holds the link may use it.
    """
    mac = hmac.new(_subkey(secret, b"form"), f"{action}:{token}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()[:16]).rstrip(b"=").decode("ascii")


def check_form_key(
    secret: bytes, token: str, action: Literal["unsubscribe", "resubscribe"], value: str
) -> bool:
    """Constant-time check of a :func:`form_key` value."""
    return hmac.compare_digest(form_key(secret, token, action).encode(), value.encode())


_FEEDBACK_FORMAT = 2  # 1: before the subscriber's salt was bound in; refused
_FEEDBACK_PLAIN = struct.Struct(">QIQB")  # subscriber_id, token_version, entry_id, direction
_FEEDBACK_BYTES = 1 + _FEEDBACK_PLAIN.size + _TAG_BYTES
FeedbackDirection = Literal["more", "fewer"]
_DIRECTIONS: tuple[FeedbackDirection, FeedbackDirection] = ("more", "fewer")


@dataclass(frozen=True, slots=True)
class FeedbackData:
    """What a feedback link names: who, at which link generation, which entry, which way."""

    subscriber_id: int
    version: int
    entry_id: int
    direction: FeedbackDirection


def _sealed_tag(
    secret: bytes, label: bytes, fmt: int, list_id: str, salt: str, plain: bytes
) -> bytes:
    msg = bytes([fmt]) + list_id.encode("utf-8") + b"\x00" + salt.encode("utf-8") + b"\x00" + plain
    return hmac.digest(_subkey(secret, label + b"-mac"), msg, "sha256")[:_TAG_BYTES]


def _seal(secret: bytes, label: bytes, fmt: int, list_id: str, salt: str, plain: bytes) -> str:
    """:func:`make_token`'s construction for a longer plaintext, under its own keys."""
    if not secret:
        raise TokenError("empty secret")
    if not salt:
        raise TokenError("empty token salt")
    tag = _sealed_tag(secret, label, fmt, list_id, salt, plain)
    stream = hmac.digest(_subkey(secret, label + b"-enc"), tag, "sha256")[: len(plain)]
    raw = bytes([fmt]) + _xor(plain, stream) + tag
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unseal(
    secret: bytes,
    token: str,
    *,
    label: bytes,
    fmt: int,
    size: int,
    list_id: str,
    salt_of: Callable[[int], str | None],
    refused: Mapping[int, str] | None = None,
) -> bytes:
    """The plaintext of a :func:`_seal` token (its first 8 bytes: the subscriber id);
    ``refused``: what to say of a known older format."""
    if not secret:
        raise TokenError("empty secret")
    if not token or len(token) > 96 or not token.isascii():
        raise TokenError("malformed token")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError) as e:
        raise TokenError("malformed token") from e
    if len(raw) != 1 + size + _TAG_BYTES:
        raise TokenError("malformed token")
    if refused and raw[0] in refused:
        raise TokenError(refused[raw[0]])
    if raw[0] != fmt:
        raise TokenError("malformed token")
    cipher, tag = raw[1 : 1 + size], raw[1 + size :]
    stream = hmac.digest(_subkey(secret, label + b"-enc"), tag, "sha256")[:size]
    plain = _xor(cipher, stream)
    salt = salt_of(int.from_bytes(plain[:8], "big"))
    if not salt or not hmac.compare_digest(
        _sealed_tag(secret, label, fmt, list_id, salt, plain), tag
    ):
        raise TokenError("invalid token signature")
    return plain


def make_feedback_token(
    secret: bytes,
    *,
    subscriber_id: int,
    list_id: str,
    version: int,
    salt: str,
    entry_id: int,
    direction: FeedbackDirection,
) -> str:
    """The "More/Fewer like this" link of one card: like :func:`make_token` (same
    construction, its own keys, the subscriber's ``token_salt`` bound in so a rebuilt
    database does not honour it), bound to one entry and one direction, revoked with
    the subscriber's other links."""
    if not 0 <= subscriber_id < 2**64 or not 0 <= version < 2**32 or not 0 <= entry_id < 2**64:
        raise TokenError("feedback token field out of range")
    plain = _FEEDBACK_PLAIN.pack(subscriber_id, version, entry_id, _DIRECTIONS.index(direction))
    return _seal(secret, b"feedback", _FEEDBACK_FORMAT, list_id, salt, plain)


def feedback_tokens(
    secret: bytes,
    *,
    subscriber_id: int,
    list_id: str,
    version: int,
    salt: str,
    entry_ids: Sequence[int],
) -> list[tuple[str, str]]:
    """The ("more", "fewer") :func:`make_feedback_token` pair of each entry: the same
    tokens, with the keys and the subscriber's part of the message made once (a digest
    signs about twenty)."""
    if not secret:
        raise TokenError("empty secret")
    if not salt:
        raise TokenError("empty token salt")
    if not 0 <= subscriber_id < 2**64 or not 0 <= version < 2**32:
        raise TokenError("feedback token field out of range")
    mac_key, enc_key = _subkey(secret, b"feedback-mac"), _subkey(secret, b"feedback-enc")
    fmt = bytes([_FEEDBACK_FORMAT])
    head = fmt + list_id.encode("utf-8") + b"\x00" + salt.encode("utf-8") + b"\x00"
    pack, size, digest = _FEEDBACK_PLAIN.pack, _FEEDBACK_PLAIN.size, hmac.digest
    b64, from_bytes = base64.urlsafe_b64encode, int.from_bytes
    out: list[tuple[str, str]] = []
    for entry_id in entry_ids:
        if not 0 <= entry_id < 2**64:
            raise TokenError("feedback token field out of range")
        pair = []
        for direction in (0, 1):  # _DIRECTIONS: more, fewer
            plain = pack(subscriber_id, version, entry_id, direction)
            tag = digest(mac_key, head + plain, "sha256")[:_TAG_BYTES]
            stream = digest(enc_key, tag, "sha256")[:size]
            cipher = (from_bytes(plain, "big") ^ from_bytes(stream, "big")).to_bytes(size, "big")
            pair.append(b64(fmt + cipher + tag).rstrip(b"=").decode("ascii"))
        out.append((pair[0], pair[1]))
    return out


def read_feedback_token(
    secret: bytes, token: str, *, list_id: str, salt_of: Callable[[int], str | None]
) -> FeedbackData:
    """Check and open a :func:`make_feedback_token`; :class:`TokenError` if not ours.
    ``salt_of`` is as for :func:`read_token`. The caller compares ``version`` with the
    subscriber's ``token_version``."""
    plain = _unseal(
        secret,
        token,
        label=b"feedback",
        fmt=_FEEDBACK_FORMAT,
        size=_FEEDBACK_PLAIN.size,
        list_id=list_id,
        salt_of=salt_of,
        refused={1: "feedback link from before it was bound to the subscriber (format 1)"},
    )
    subscriber_id, version, entry_id, direction = _FEEDBACK_PLAIN.unpack(plain)
    if direction >= len(_DIRECTIONS):
        raise TokenError("malformed token")
    return FeedbackData(subscriber_id, version, entry_id, _DIRECTIONS[direction])


_DIGEST_FORMAT = 1
_DIGEST_PLAIN = struct.Struct(">QIQ")  # subscriber_id, token_version, digest_id


@dataclass(frozen=True, slots=True)
class DigestLinkData:
    """What a "View in browser" link names: whose digest (outbox row), which generation."""

    subscriber_id: int
    version: int
    digest_id: int


def make_digest_token(
    secret: bytes, *, subscriber_id: int, list_id: str, version: int, salt: str, digest_id: int
) -> str:
    """The "View in browser" link of one sent digest: the construction of
    :func:`make_feedback_token`, its own keys, bound to the outbox row."""
    if not 0 <= subscriber_id < 2**64 or not 0 <= version < 2**32 or not 0 <= digest_id < 2**64:
        raise TokenError("digest token field out of range")
    plain = _DIGEST_PLAIN.pack(subscriber_id, version, digest_id)
    return _seal(secret, b"digest", _DIGEST_FORMAT, list_id, salt, plain)


def read_digest_token(
    secret: bytes, token: str, *, list_id: str, salt_of: Callable[[int], str | None]
) -> DigestLinkData:
    """Check and open a :func:`make_digest_token`; :class:`TokenError` if not ours."""
    plain = _unseal(
        secret,
        token,
        label=b"digest",
        fmt=_DIGEST_FORMAT,
        size=_DIGEST_PLAIN.size,
        list_id=list_id,
        salt_of=salt_of,
    )
    return DigestLinkData(*_DIGEST_PLAIN.unpack(plain))
