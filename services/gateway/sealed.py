"""Sealing a replayable answer that holds a secret (a new agent token).

An Idempotency-Key replay must answer exactly what the first request got,
secret included, yet the database must not hold that secret in a readable
form. The answer is encrypted (Fernet: AES-128-CBC with HMAC-SHA256) with a
key derived from the caller's bearer token and the Idempotency-Key. The
gateway stores neither of those in clear (tokens only as SHA-256, and the
key derivation is a different hash), so a database dump opens no answer;
only the same caller, repeating the same key, can.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken

# Bearer tokens and Idempotency-Keys are printable ASCII: NUL cannot occur in
# either, so ("ab", "c") and ("a", "bc") never derive the same key.
_SEPARATOR = b"\x00"


class SealBroken(Exception):
    """The sealed answer does not open with this token and key (another caller, or tampered)."""


def _fernet(bearer_token: str, idempotency_key: str) -> Fernet:
    digest = hashlib.sha256(bearer_token.encode() + _SEPARATOR + idempotency_key.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def seal(body: bytes, bearer_token: str, idempotency_key: str) -> bytes:
    return _fernet(bearer_token, idempotency_key).encrypt(body)


def unseal(sealed: bytes, bearer_token: str, idempotency_key: str) -> bytes:
    try:
        return _fernet(bearer_token, idempotency_key).decrypt(sealed)
    except InvalidToken as exc:
        raise SealBroken("the sealed answer does not open with this token and Idempotency-Key") from exc
