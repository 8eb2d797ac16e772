"""Unsubscribe tokens: round trip, opacity, tamper resistance, secrets from settings."""

from __future__ import annotations

import base64
import logging
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from newsletter.config import settings_from_mapping
from newsletter.errors import ConfigError, TokenError
from newsletter.tokens import (
    FeedbackDirection,
    TokenData,
    check_form_key,
    development_secret,
    feedback_tokens,
    form_key,
    make_feedback_token,
    make_token,
    preferences_url,
    read_feedback_token,
    read_token,
    secret_from_settings,
    unsubscribe_url,
)

SECRET = b"test-secret-0123456789abcdef"
LIST = "digest.example.org"
SALT = "5a17" * 8  # a subscriber's token_salt


def _salts(subscriber_id: int) -> str:
    return SALT


def _decode(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


@given(
    subscriber_id=st.integers(min_value=0, max_value=2**64 - 1),
    version=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_round_trip(subscriber_id: int, version: int) -> None:
    token = make_token(
        SECRET, subscriber_id=subscriber_id, list_id=LIST, version=version, salt=SALT
    )
    assert re.fullmatch(r"[A-Za-z0-9_-]{39}", token)
    assert read_token(SECRET, token, list_id=LIST, salt_of=_salts) == TokenData(
        subscriber_id, version
    )


def test_tokens_are_stable_across_versions_of_the_code() -> None:
    # Links already sent must keep working: these values were made by format 2.
    assert (
        make_token(b"k" * 32, subscriber_id=42, list_id=LIST, version=3, salt=SALT)
        == "AuoC0CxQRcjbrGwUj_P_4PDcgtpx-NWeDozLC6Q"
    )
    assert (
        make_token(
            b"another secret key of some length",
            subscriber_id=2**63 + 5,
            list_id="listé.example",
            version=2**32 - 1,
            salt=SALT,
        )
        == "Ah1_YXPUhEkC35zowVczdw3xz-HH4dK9kGObHvs"
    )
    assert form_key(b"k" * 32, "tok", "unsubscribe") == "3fw2q9XHQmsJqJ9AdykfJQ"


def test_format_1_tokens_from_before_the_salt_are_refused() -> None:
    # Made by the first version (no salt): valid then, for the same secret and list.
    with pytest.raises(TokenError, match="format 1"):
        read_token(
            b"k" * 32, "ATnWop13bc2LYeuuwAvD4Ya-X5n3H0a9wlnmQTg", list_id=LIST, salt_of=_salts
        )


def test_token_is_bound_to_the_salt_of_its_row() -> None:
    token = make_token(SECRET, subscriber_id=7, list_id=LIST, version=1, salt=SALT)
    asked: list[int] = []

    def other_row(subscriber_id: int) -> str:
        asked.append(subscriber_id)
        return "0" * 32  # subscriber 7 of a rebuilt database: same id, new salt

    with pytest.raises(TokenError, match="signature"):
        read_token(SECRET, token, list_id=LIST, salt_of=other_row)
    assert asked == [7]
    with pytest.raises(TokenError, match="signature"):
        read_token(SECRET, token, list_id=LIST, salt_of=lambda _sid: None)  # no such row
    assert (
        make_token(SECRET, subscriber_id=7, list_id=LIST, version=1, salt="0" * 32) != token
        and len(token) == 39
    )
    with pytest.raises(TokenError):
        make_token(SECRET, subscriber_id=7, list_id=LIST, version=1, salt="")


def test_deterministic_and_distinct() -> None:
    a = make_token(SECRET, subscriber_id=7, list_id=LIST, version=1, salt=SALT)
    assert a == make_token(SECRET, subscriber_id=7, list_id=LIST, version=1, salt=SALT)
    others = {
        make_token(SECRET, subscriber_id=8, list_id=LIST, version=1, salt=SALT),
        make_token(SECRET, subscriber_id=7, list_id=LIST, version=2, salt=SALT),
        make_token(SECRET, subscriber_id=7, list_id="other.example.org", version=1, salt=SALT),
        make_token(
            b"another-secret-0123456789", subscriber_id=7, list_id=LIST, version=1, salt=SALT
        ),
    }
    assert a not in others and len(others) == 4


def test_no_id_in_clear() -> None:
    """Consecutive ids give unrelated tokens: the id is not readable or guessable."""
    raws = [
        _decode(make_token(SECRET, subscriber_id=i, list_id=LIST, version=1, salt=SALT))
        for i in range(64)
    ]
    for i, raw in enumerate(raws):
        assert i.to_bytes(8, "big") not in raw
    # Each ciphertext byte position takes many values across consecutive ids, where a
    # clear-text id would leave the high bytes constant.
    for pos in range(1, 13):
        assert len({raw[pos] for raw in raws}) > 32


def test_wrong_secret_or_list_rejected() -> None:
    token = make_token(SECRET, subscriber_id=42, list_id=LIST, version=3, salt=SALT)
    with pytest.raises(TokenError):
        read_token(b"wrong-secret-0123456789abc", token, list_id=LIST, salt_of=_salts)
    with pytest.raises(TokenError):
        read_token(SECRET, token, list_id="other.example.org", salt_of=_salts)


def test_every_single_bit_flip_rejected() -> None:
    token = make_token(SECRET, subscriber_id=42, list_id=LIST, version=3, salt=SALT)
    raw = bytearray(_decode(token))
    for i in range(len(raw)):
        for bit in range(8):
            bad = bytearray(raw)
            bad[i] ^= 1 << bit
            forged = base64.urlsafe_b64encode(bytes(bad)).rstrip(b"=").decode()
            with pytest.raises(TokenError):
                read_token(SECRET, forged, list_id=LIST, salt_of=_salts)


@pytest.mark.parametrize(
    "token",
    ["", "x", "not base64 !", "é" * 39, "A" * 39, "A" * 200, "AAAA", "%2E%2E", "A" * 38 + "=="],
)
def test_malformed_rejected(token: str) -> None:
    with pytest.raises(TokenError):
        read_token(SECRET, token, list_id=LIST, salt_of=_salts)


def test_truncated_rejected() -> None:
    token = make_token(SECRET, subscriber_id=42, list_id=LIST, version=3, salt=SALT)
    for cut in (1, 5, 20):
        with pytest.raises(TokenError):
            read_token(SECRET, token[:-cut], list_id=LIST, salt_of=_salts)


def test_out_of_range_and_empty_secret() -> None:
    with pytest.raises(TokenError):
        make_token(SECRET, subscriber_id=-1, list_id=LIST, version=1, salt=SALT)
    with pytest.raises(TokenError):
        make_token(SECRET, subscriber_id=1, list_id=LIST, version=2**32, salt=SALT)
    with pytest.raises(TokenError):
        make_token(b"", subscriber_id=1, list_id=LIST, version=1, salt=SALT)


def test_urls() -> None:
    assert unsubscribe_url("https://ex.org/nl/", "TOK") == "https://ex.org/nl/unsubscribe/TOK"
    assert unsubscribe_url("https://ex.org", "TOK") == "https://ex.org/unsubscribe/TOK"
    assert preferences_url("https://ex.org/", "TOK") == "https://ex.org/preferences/TOK"


def test_form_key_bound_to_token_and_action() -> None:
    t1 = make_token(SECRET, subscriber_id=1, list_id=LIST, version=1, salt=SALT)
    t2 = make_token(SECRET, subscriber_id=2, list_id=LIST, version=1, salt=SALT)
    key = form_key(SECRET, t1, "unsubscribe")
    assert check_form_key(SECRET, t1, "unsubscribe", key)
    assert not check_form_key(SECRET, t2, "unsubscribe", key)
    assert not check_form_key(SECRET, t1, "resubscribe", key)
    assert not check_form_key(b"another-secret-0123456789", t1, "unsubscribe", key)
    assert not check_form_key(SECRET, t1, "unsubscribe", "")


def test_secret_from_env() -> None:
    s = settings_from_mapping({"newsletter": {"secret_key_env": "MY_KEY", "delivery": "smtp"}})
    assert secret_from_settings(s, env={"MY_KEY": "k" * 32}) == b"k" * 32


def test_secret_required_for_smtp_and_production() -> None:
    smtp = settings_from_mapping({"newsletter": {"delivery": "smtp"}})
    with pytest.raises(ConfigError, match="NEWSLETTER_SECRET_KEY: not set"):
        secret_from_settings(smtp, env={})
    preview = settings_from_mapping({})
    with pytest.raises(ConfigError, match="not set"):
        secret_from_settings(preview, env={}, require=True)


def test_secret_too_short() -> None:
    s = settings_from_mapping({})
    with pytest.raises(ConfigError, match="too short"):
        secret_from_settings(s, env={"NEWSLETTER_SECRET_KEY": "short"})


def test_preview_falls_back_to_development_key(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("newsletter.tokens._warned", set())  # a fresh process
    s = settings_from_mapping({"newsletter": {"list_id": "x.example"}})
    with caplog.at_level(logging.WARNING, logger="newsletter.tokens"):
        key = secret_from_settings(s, env={})
        again = secret_from_settings(s, env={})
    assert key == again == development_secret("x.example")
    # Warned once per process, however many stages ask for the key.
    assert caplog.text.count("public development key") == 1


def test_feedback_token_is_bound_to_the_salt_of_its_row() -> None:
    token = make_feedback_token(
        SECRET, subscriber_id=7, list_id=LIST, version=1, salt=SALT, entry_id=99,
        direction="fewer",
    )  # fmt: skip
    data = read_feedback_token(SECRET, token, list_id=LIST, salt_of=_salts)
    assert (data.subscriber_id, data.entry_id, data.direction) == (7, 99, "fewer")
    with pytest.raises(TokenError, match="signature"):
        read_feedback_token(SECRET, token, list_id=LIST, salt_of=lambda _sid: "0" * 32)
    with pytest.raises(TokenError, match="signature"):
        read_feedback_token(SECRET, token, list_id=LIST, salt_of=lambda _sid: None)
    old = bytearray(_decode(token))
    old[0] = 1  # a link made before the salt was bound in
    with pytest.raises(TokenError, match="format 1"):
        read_feedback_token(
            SECRET, base64.urlsafe_b64encode(bytes(old)).rstrip(b"=").decode(),
            list_id=LIST, salt_of=_salts,
        )  # fmt: skip
    with pytest.raises(TokenError):
        make_feedback_token(
            SECRET, subscriber_id=7, list_id=LIST, version=1, salt="", entry_id=1,
            direction="more",
        )  # fmt: skip


@given(
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**32 - 1),
    st.lists(st.integers(0, 2**64 - 1), max_size=5),
    st.text(min_size=1, max_size=40),
)
def test_a_digests_feedback_tokens_are_the_one_by_one_tokens(
    subscriber_id: int, version: int, entries: list[int], list_id: str
) -> None:
    # Composing signs a digest's cards in one call; the tokens are make_feedback_token's.
    got = feedback_tokens(
        SECRET, subscriber_id=subscriber_id, list_id=list_id, version=version, salt=SALT,
        entry_ids=entries,
    )  # fmt: skip

    def one(entry_id: int, direction: FeedbackDirection) -> str:
        return make_feedback_token(
            SECRET, subscriber_id=subscriber_id, list_id=list_id, version=version,
            salt=SALT, entry_id=entry_id, direction=direction,
        )  # fmt: skip

    assert got == [(one(e, "more"), one(e, "fewer")) for e in entries]


def test_a_digests_feedback_tokens_check_their_fields() -> None:
    for bad in ({"salt": ""}, {"entry_ids": [2**64]}, {"version": -1}):
        kw: dict[str, object] = {"subscriber_id": 1, "version": 1, "salt": SALT, "entry_ids": [1]}
        kw.update(bad)
        with pytest.raises(TokenError):
            feedback_tokens(SECRET, list_id=LIST, **kw)  # type: ignore[arg-type]
    with pytest.raises(TokenError):
        feedback_tokens(b"", subscriber_id=1, list_id=LIST, version=1, salt=SALT, entry_ids=[])
