"""Answer links: the one we sent works, anything else is refused with a plain reason."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest

from alerting.deliver.tokens import TokenError, TokenSigner

NOW = datetime(2026, 7, 1, 2, 0, tzinfo=UTC)
DELIVERY = "0123456789abcdef0123456789abcdef"


def signer() -> TokenSigner:
    return TokenSigner(b"test-secret", ttl=timedelta(hours=72))


def test_the_link_we_sent_names_its_delivery() -> None:
    token = signer().sign(DELIVERY, NOW)
    assert len(token) == 43
    assert signer().verify(token, NOW + timedelta(hours=71)) == DELIVERY


def test_a_changed_last_character_is_refused_even_when_it_decodes_the_same() -> None:
    token = signer().sign(DELIVERY, NOW)
    # The last character's two low bits are spare; flipping only them decodes to the same bytes.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = token[:-1] + alphabet[alphabet.index(token[-1]) ^ 0b01]
    assert base64.urlsafe_b64decode(twin + "=") == base64.urlsafe_b64decode(token + "=")
    with pytest.raises(TokenError, match="malformed"):
        signer().verify(twin, NOW)


@pytest.mark.parametrize("at", [0, 10, 20, 30, 41])
def test_a_changed_character_anywhere_is_refused(at: int) -> None:
    token = signer().sign(DELIVERY, NOW)
    changed = token[:at] + ("A" if token[at] != "A" else "B") + token[at + 1 :]
    with pytest.raises(TokenError) as raised:
        signer().verify(changed, NOW)
    assert not raised.value.expired


@pytest.mark.parametrize("bad", ["", "abc", "!" * 43, signer().sign(DELIVERY, NOW) + "A"])
def test_a_malformed_link_is_refused(bad: str) -> None:
    with pytest.raises(TokenError, match="malformed"):
        signer().verify(bad, NOW)


def test_another_secret_does_not_verify() -> None:
    token = TokenSigner(b"other-secret").sign(DELIVERY, NOW)
    with pytest.raises(TokenError, match="not valid"):
        signer().verify(token, NOW)


def test_an_expired_link_says_it_expired() -> None:
    token = signer().sign(DELIVERY, NOW)
    with pytest.raises(TokenError, match="expired") as raised:
        signer().verify(token, NOW + timedelta(hours=72, seconds=1))
    assert raised.value.expired
