"""Idempotency keys (the ENS `ClientToken`): the same key and request give the first answer.

A request is identified by its method, path and body in canonical JSON, so
key order and whitespace in the body do not make two equal requests differ.

The rule is stated here once; two stores keep what it replays, because they
keep different things. A tenant's command replays its operation as it is now
(the `operations` row carries the key: recording the operation and the key is
one insert, and a replay shows how far the operation has come). An agent token's
issue or revocation replays the very bytes first answered, sealed because they
may hold a secret that cannot be made again (`idempotent_answers`, sealed.py).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Header, Request

from schemas.errors import ErrorCode, HaVipError

KEY_PATTERN = r"^[\x21-\x7e]{1,128}$"  # printable ASCII, no spaces
_KEY = re.compile(KEY_PATTERN)

# The header as every mutation declares it, so the document states the rule the server enforces.
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=KEY_PATTERN,
        description="Same key and request: the first answer again (the ENS ClientToken).",
    ),
]


def request_fingerprint(method: str, path: str, body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    digest = hashlib.sha256()
    digest.update(f"{method.upper()} {path}\n".encode())
    digest.update(canonical.encode())
    return digest.hexdigest()


def check_idempotency_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not _KEY.fullmatch(key):
        raise HaVipError(
            ErrorCode.INVALID_PARAMETER, "Idempotency-Key must be 1 to 128 printable ASCII characters without spaces"
        )
    return key


@dataclass(frozen=True)
class Idempotency:
    key: str | None
    request_hash: str

    def check_replay(self, first_request_hash: str | None) -> None:
        """A key used first for another request: IdempotentParameterMismatch, whatever that request did."""
        if first_request_hash != self.request_hash:
            raise HaVipError(ErrorCode.IDEMPOTENT_MISMATCH, "this Idempotency-Key was used with a different request")


def idempotency_of(key: str | None, request: Request, wanted: dict[str, Any]) -> Idempotency:
    """The key as sent (400 when malformed) and what identifies the request (`wanted`: its body as it counts)."""
    return Idempotency(
        key=check_idempotency_key(key), request_hash=request_fingerprint(request.method, request.url.path, wanted)
    )


def in_flight() -> HaVipError:
    """Another request with the key has started and not finished: the client retries and gets its answer."""
    return HaVipError(
        ErrorCode.SERVICE_UNAVAILABLE, "a request with this Idempotency-Key is in flight; retry", retry_after=1
    )
