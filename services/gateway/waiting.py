"""How long a read of an operation may hold its answer for a terminal state (`?wait=5s`), and the holding."""

from __future__ import annotations

import asyncio
import re

import asyncpg

from schemas.errors import ErrorCode, HaVipError
from services.gateway.operations import PENDING, Operation, find_operation

MAX_WAIT_SECONDS = 30.0
# Up to 30 s or 30000 ms, exactly what parse_wait accepts: the document states the rule the server enforces.
WAIT_PATTERN = r"^((30(\.0{1,3})?|[12]?[0-9](\.[0-9]{1,3})?)s?|(30000(\.0{1,3})?|[12]?[0-9]{1,4}(\.[0-9]{1,3})?)ms)$"


def parse_wait(text: str | None) -> float:
    """`5s`, `500ms` or `5` (seconds), at most 30 s: how long a read may wait for a terminal state."""
    if text is None:
        return 0.0
    match = re.fullmatch(r"(\d{1,5}(?:\.\d{1,3})?)(ms|s)?", text)
    if match is None:
        raise HaVipError(ErrorCode.INVALID_PARAMETER, "wait must look like 5s, 500ms or 5")
    seconds = float(match[1]) / (1000 if match[2] == "ms" else 1)
    if seconds > MAX_WAIT_SECONDS:
        raise HaVipError(ErrorCode.INVALID_PARAMETER, f"wait may be at most {MAX_WAIT_SECONDS:.0f}s")
    return seconds


async def wait_for_outcome(
    db: asyncpg.Pool, tenant_id: str, operation_id: str, *, timeout: float, every: float = 0.1
) -> Operation | None:
    """The operation once it is terminal, or as it is when `timeout` runs out (None: no such operation)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await find_operation(db, tenant_id, operation_id)
        if found is None or found.status is not PENDING or asyncio.get_running_loop().time() >= deadline:
            return found
        await asyncio.sleep(every)
