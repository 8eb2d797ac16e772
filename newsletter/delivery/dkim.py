"""DKIM signing (RFC 6376) of finished messages, as a ``Sender`` that wraps another.

Gmail and Yahoo reject unauthenticated bulk mail; when the relay does not sign for the
From domain, the program signs with ``[dkim]``. Signing prepends one
``DKIM-Signature`` header and changes no other byte, so the renderer's fast path stays
as it is and a message without ``[dkim]`` is exactly what it was. The signature covers
the headers Gmail asks for on list mail, the one-click ``List-Unsubscribe-Post``
included.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

import dkim

from newsletter.config import DkimSettings
from newsletter.delivery.base import OutgoingMessage, Receipt, Sender, nothing_before_data
from newsletter.errors import ConfigError, DeliveryError

log = logging.getLogger(__name__)

# The headers dkimpy recommends signing, and the one-click unsubscribe header (RFC 8058
# requires it to be covered by the signature).
SIGNED_HEADERS: tuple[bytes, ...] = (*dkim.DKIM.SHOULD, b"list-unsubscribe-post")
_PROBE = b"From: probe@example.invalid\r\nSubject: probe\r\n\r\nprobe\r\n"


class DkimSigner:
    """Signs messages with one key for one selector and domain; thread-safe (no state)."""

    def __init__(self, selector: str, domain: str, private_key: bytes) -> None:
        self.selector = selector.encode("ascii")
        self.domain = domain.encode("idna")
        self._key = private_key

    @classmethod
    def from_settings(cls, settings: DkimSettings) -> DkimSigner:
        """The signer ``[dkim]`` describes; a key that cannot sign is a configuration error."""
        path = settings.key_file
        if path is None:
            raise ConfigError("DKIM signing needs a key file", key="dkim.key_file")
        try:
            key = path.read_bytes()
        except OSError as e:
            raise ConfigError(f"cannot read the DKIM key: {e}", path=str(path)) from e
        try:
            signer = cls(settings.selector.strip(), settings.domain.strip().rstrip("."), key)
        except (UnicodeError, ValueError) as e:
            raise ConfigError(f"not a DNS name: {e}", key="dkim.domain") from e
        try:
            signer.signature(_PROBE)
        except (dkim.DKIMException, ValueError, IndexError) as e:
            raise ConfigError(
                f"cannot sign with this key (expected a PEM RSA private key): {e}",
                path=str(path),
                key="dkim.key_file",
            ) from e
        return signer

    def signature(self, data: bytes) -> bytes:
        """The ``DKIM-Signature`` header field for ``data``, CRLF-terminated."""
        sig: bytes = dkim.sign(
            data,
            self.selector,
            self.domain,
            self._key,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=list(SIGNED_HEADERS),
        )
        return sig

    def sign(self, data: bytes) -> bytes:
        """``data`` with its signature prepended (where DKIM headers go)."""
        return self.signature(data) + data


class SigningSender(Sender):
    """Signs each message, then hands it to ``inner``; otherwise ``inner`` itself."""

    def __init__(self, inner: Sender, signer: DkimSigner) -> None:
        self.inner = inner
        self.signer = signer
        self.parallelism = inner.parallelism

    def send(
        self, message: OutgoingMessage, before_data: Callable[[], None] = nothing_before_data
    ) -> Receipt:
        try:
            signed = self.signer.sign(message.data)
        except dkim.DKIMException as e:
            raise DeliveryError(f"DKIM signing failed: {e}", permanent=True) from e
        return self.inner.send(replace(message, data=signed, plain_lines=False), before_data)

    def close(self) -> None:
        self.inner.close()

    def describe(self) -> str:
        record = f"{self.signer.selector.decode()}._domainkey.{self.signer.domain.decode()}"
        return f"{self.inner.describe()}, DKIM-signed ({record})"
