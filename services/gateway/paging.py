"""Opaque page tokens, and cutting a page, for listing HAVIPs and a HAVIP's owner history.

A token remembers the last key of the page (keyset paging over an index,
stable under inserts) and the filters it was issued for, so a token reused
with other filters is refused instead of skipping rows.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from schemas.errors import ErrorCode, HaVipError

T = TypeVar("T")


def _filters_digest(filters: Mapping[str, str | None]) -> str:
    canonical = json.dumps({k: v for k, v in filters.items() if v is not None}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def encode_page_token(after_havip_id: str, filters: Mapping[str, str | None]) -> str:
    payload = json.dumps({"a": after_havip_id, "f": _filters_digest(filters)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_page_token(token: str | None, filters: Mapping[str, str | None]) -> str | None:
    """The HAVIP id to continue after, or None for the first page."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        payload = json.loads(raw)
        after, digest = payload["a"], payload["f"]
    except (binascii.Error, ValueError, TypeError, KeyError):
        raise HaVipError(ErrorCode.INVALID_PARAMETER, "page_token is not a token this API issued") from None
    if not isinstance(after, str) or digest != _filters_digest(filters):
        raise HaVipError(ErrorCode.INVALID_PARAMETER, "page_token was issued for other filters")
    return after


def cut_page(
    found: Sequence[T], page_size: int, key: Callable[[T], str], filters: Mapping[str, str | None]
) -> tuple[list[T], str | None]:
    """The page and the token for the next one, from `page_size + 1` rows read.

    One more than asked tells whether another page exists without a count(*).
    """
    page = list(found[:page_size])
    next_token = encode_page_token(key(page[-1]), filters) if len(found) > page_size else None
    return page, next_token


def numeric_cursor(after: str | None) -> int | None:
    """The key to continue after, for a list keyed by a number (the owner history's change ids)."""
    if after is None:
        return None
    if not after.isdigit():
        raise HaVipError(ErrorCode.INVALID_PARAMETER, "page_token is not a token this API issued")
    return int(after)
