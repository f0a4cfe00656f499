"""Idempotency keys (the ENS `ClientToken`): the same key and request give the first answer.

A request is identified by its method, path and body in canonical JSON, so
key order and whitespace in the body do not make two equal requests differ.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Any

from fastapi import Header

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
