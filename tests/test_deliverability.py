"""What receiving servers check: the DKIM signature (verified with dkimpy against the
public key, as a receiver would after its DNS lookup) and SpamAssassin's verdict on a
rendered digest (Debian's package with its local rules, where it is installed)."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import dkim
import pytest

from newsletter.config import settings_from_mapping
from newsletter.delivery import (
    OutgoingMessage,
    PreviewSender,
    Receipt,
    Sender,
    make_sender,
    nothing_before_data,
)
from newsletter.delivery.dkim import SigningSender
from newsletter.errors import ConfigError
from newsletter.render import RenderedEmail, Renderer
from tests.support.digests import profile, request, sample_matches, settings
from tests.support.smtp import SmtpTestServer

SELECTOR = "news2026"
DOMAIN = "example.org"


def _keys(tmp_path: Path) -> tuple[Path, bytes]:
    """A fresh RSA key pair: the private key file and the DNS TXT record's value."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (needed to make a test key)")
    key = tmp_path / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    der = subprocess.run(
        ["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"],
        check=True,
        capture_output=True,
    ).stdout
    return key, b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


def _digest() -> RenderedEmail:
    r = Renderer(settings(unsubscribe_mailto="unsubscribe@example.org"))
    out = r.render(request(profile(), sample_matches(3)))
    assert out is not None
    return out


def _verify(data: bytes, txt: bytes) -> bool:
    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == f"{SELECTOR}._domainkey.{DOMAIN}.".encode()
        return txt

    return bool(dkim.verify(data, dnsfunc=dns))


def test_dkim_signed_digest_verifies_after_smtp(
    tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    key, txt = _keys(tmp_path)
    cfg = settings_from_mapping(
        {
            "newsletter": {"delivery": "smtp", "base_url": "https://digest.example.org"},
            "smtp": smtp_server.smtp_config(),
            "dkim": {"selector": SELECTOR, "domain": DOMAIN, "key_file": "dkim.pem"},
        },
        base_dir=tmp_path,
    )
    assert cfg.dkim.key_file == key  # relative to the config file
    digest = _digest()
    with make_sender(cfg) as sender:
        assert isinstance(sender, SigningSender)
        sender.send(OutgoingMessage(digest.sender, digest.recipient, digest.data))
    (got,) = smtp_server.messages
    assert got.data.startswith(b"DKIM-Signature: ")
    assert got.data.endswith(digest.data)  # nothing else changed: the fast path's bytes
    assert _verify(got.data, txt)
    signed = re.search(rb"\bh=([^;]+)", got.data.split(b"\r\n\r\n", 1)[0])
    assert signed is not None
    names = {n.strip().lower() for n in re.sub(rb"\s", b"", signed.group(1)).split(b":")}
    assert {b"from", b"subject", b"list-unsubscribe", b"list-unsubscribe-post"} <= names
    # A receiver that sees the body changed after signing rejects the signature.
    assert not _verify(got.data.replace(b"Unsubscribe", b"Unsubscr1be", 1), txt)


def test_without_dkim_the_bytes_are_untouched(tmp_path: Path) -> None:
    cfg = settings_from_mapping({}, base_dir=tmp_path)
    sender = make_sender(cfg)
    assert isinstance(sender, PreviewSender)
    digest = _digest()
    sender.send(OutgoingMessage(digest.sender, digest.recipient, digest.data, period="p"))
    (path,) = (tmp_path / "outbox" / "sent" / "p").iterdir()
    assert path.read_bytes() == digest.data


def test_dkim_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"dkim\.key_file: DKIM signing needs"):
        settings_from_mapping({"dkim": {"selector": "s", "domain": DOMAIN}}, base_dir=tmp_path)
    (tmp_path / "bad.pem").write_text("not a key\n")
    bad = settings_from_mapping(
        {"dkim": {"selector": "s", "domain": DOMAIN, "key_file": "bad.pem"}}, base_dir=tmp_path
    )
    with pytest.raises(ConfigError, match=r"bad\.pem: dkim\.key_file: cannot sign"):
        make_sender(bad)
    missing = settings_from_mapping(
        {"dkim": {"selector": "s", "domain": DOMAIN, "key_file": "none.pem"}}, base_dir=tmp_path
    )
    with pytest.raises(ConfigError, match=r"none\.pem: cannot read the DKIM key"):
        make_sender(missing)


@pytest.mark.slow
def test_spamassassin_finds_nothing_in_a_digest(tmp_path: Path) -> None:
    if shutil.which("spamassassin") is None:
        pytest.skip("spamassassin is not installed (apt-get install spamassassin)")
    eml = tmp_path / "digest.eml"
    eml.write_bytes(_digest().data)
    # -L: local rules only (no DNS or network tests), -t: the report appended.
    report = subprocess.run(
        ["spamassassin", "-L", "-t"],
        stdin=eml.open("rb"),
        capture_output=True,
        check=True,
        timeout=120,
    ).stdout.decode("utf-8", "replace")
    details = report.split("Content analysis details:", 1)[1]
    rules = set(re.findall(r"^\s*-?\d+\.\d+\s+([A-Z0-9_]+)", details, re.MULTILINE))
    assert rules, details  # the report was parsed
    # The hidden preheader (colour on its own background) and text split across tags.
    assert not rules & {"HTML_FONT_LOW_CONTRAST", "HTML_OBFUSCATE_05_10", "HTML_OBFUSCATE_10_20"}
    score = float(re.search(r"\(([-\d.]+) points", details).group(1))  # type: ignore[union-attr]
    assert score <= 0.0, details


def test_signing_drops_the_plain_lines_check_of_the_unsigned_bytes() -> None:
    # The check was made on the unsigned message; the signed one is checked afresh.
    class Keep(Sender):
        def __init__(self) -> None:
            self.got: list[OutgoingMessage] = []

        def send(
            self, message: OutgoingMessage, before_data: Callable[[], None] = nothing_before_data
        ) -> Receipt:
            self.got.append(message)
            return Receipt("250 ok", message.message_id)

    class Signer:
        def sign(self, data: bytes) -> bytes:
            return b"DKIM-Signature: v=1\r\n" + data

    inner = Keep()
    signing = SigningSender(inner, Signer())  # type: ignore[arg-type]
    signing.send(OutgoingMessage("a@x.org", "b@x.org", b"Subject: x\r\n\r\n", plain_lines=True))
    assert inner.got[0].data.startswith(b"DKIM-Signature") and not inner.got[0].plain_lines
