"""Sealed idempotent answers: only the same caller with the same Idempotency-Key opens one."""

from __future__ import annotations

import pytest

from services.gateway.sealed import SealBroken, seal, unseal

ANSWER = b'{"token_id":"tok-1","token":"hva-secret-value"}'


def test_the_same_token_and_key_open_the_answer() -> None:
    sealed = seal(ANSWER, "hvt-caller", "key-1")
    assert unseal(sealed, "hvt-caller", "key-1") == ANSWER


def test_the_sealed_form_holds_neither_the_secret_nor_the_token_nor_the_key() -> None:
    sealed = seal(ANSWER, "hvt-caller", "key-1")
    for clear in (b"hva-secret-value", b"tok-1", b"hvt-caller", b"key-1"):
        assert clear not in sealed


@pytest.mark.parametrize(
    ("token", "key"),
    [("hvt-other", "key-1"), ("hvt-caller", "key-2"), ("hvt-calle", "rkey-1"), ("", "")],
)
def test_another_token_or_key_does_not_open_it(token: str, key: str) -> None:
    sealed = seal(ANSWER, "hvt-caller", "key-1")
    with pytest.raises(SealBroken):
        unseal(sealed, token, key)


def test_a_tampered_answer_does_not_open() -> None:
    sealed = bytearray(seal(ANSWER, "hvt-caller", "key-1"))
    sealed[-5] ^= 0x01
    with pytest.raises(SealBroken):
        unseal(bytes(sealed), "hvt-caller", "key-1")


def test_sealing_twice_gives_different_bytes() -> None:
    # Fernet uses a fresh IV each time: two equal answers cannot be matched in a dump.
    assert seal(ANSWER, "hvt-caller", "key-1") != seal(ANSWER, "hvt-caller", "key-1")


def test_an_empty_answer_seals_too() -> None:
    assert unseal(seal(b"", "hvt-caller", "key-1"), "hvt-caller", "key-1") == b""
