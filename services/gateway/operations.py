"""The `operations` table: one row per tenant mutation, from 202 to its outcome.

The row is written before the command is published, so an operation a tenant
was told about always exists; the results consumer moves it to Succeeded or
Failed exactly once (only a Pending row changes: the first outcome wins).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from schemas.errors import ErrorCode
from schemas.messages import CommandRejected, CommandResult, CommandSucceeded

PENDING = "Pending"
SUCCEEDED = "Succeeded"
FAILED = "Failed"

_COLUMNS = (
    "operation_id, tenant_id, kind, havip_id, status, error_code, error_message, request, "
    "request_hash, created_at, updated_at"
)


@dataclass(frozen=True)
class Operation:
    operation_id: str
    tenant_id: str
    kind: str
    havip_id: str
    status: str
    error_code: str | None
    error_message: str | None
    request: dict[str, Any]
    request_hash: str | None
    created_at: datetime
    updated_at: datetime


def _operation(row: asyncpg.Record) -> Operation:
    request = row["request"]
    return Operation(
        operation_id=row["operation_id"],
        tenant_id=row["tenant_id"],
        kind=row["kind"],
        havip_id=row["havip_id"],
        status=row["status"],
        error_code=row["error_code"],
        error_message=row["error_message"],
        request=json.loads(request) if isinstance(request, str) else dict(request),
        request_hash=row["request_hash"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def insert_operation(
    db: asyncpg.Pool | asyncpg.Connection,
    *,
    operation_id: str,
    tenant_id: str,
    kind: str,
    havip_id: str,
    request: dict[str, Any],
    idempotency_key: str | None,
    request_hash: str,
) -> Operation:
    """Raises asyncpg.UniqueViolationError when the tenant already used the key."""
    row = await db.fetchrow(
        f"INSERT INTO operations (operation_id, tenant_id, kind, havip_id, status, request,"
        f" idempotency_key, request_hash) VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8)"
        f" RETURNING {_COLUMNS}",
        operation_id,
        tenant_id,
        kind,
        havip_id,
        PENDING,
        json.dumps(request),
        idempotency_key,
        request_hash,
    )
    return _operation(row)


async def find_by_idempotency_key(db: asyncpg.Pool | asyncpg.Connection, tenant_id: str, key: str) -> Operation | None:
    row = await db.fetchrow(
        f"SELECT {_COLUMNS} FROM operations WHERE tenant_id = $1 AND idempotency_key = $2", tenant_id, key
    )
    return _operation(row) if row else None


async def find_operation(db: asyncpg.Pool | asyncpg.Connection, tenant_id: str, operation_id: str) -> Operation | None:
    row = await db.fetchrow(
        f"SELECT {_COLUMNS} FROM operations WHERE operation_id = $1 AND tenant_id = $2", operation_id, tenant_id
    )
    return _operation(row) if row else None


async def fail_unpublished(db: asyncpg.Pool | asyncpg.Connection, operation_id: str, message: str) -> Operation:
    """The command never reached the broker: fail the operation and free its key.

    Freeing the key lets the tenant retry with the same Idempotency-Key; no
    other service ever saw this command, so nothing can answer it twice.
    """
    row = await db.fetchrow(
        f"UPDATE operations SET status = $2, error_code = $3, error_message = $4, updated_at = now(),"
        f" idempotency_key = NULL WHERE operation_id = $1 RETURNING {_COLUMNS}",
        operation_id,
        FAILED,
        str(ErrorCode.SERVICE_UNAVAILABLE),
        message,
    )
    return _operation(row)


async def record_outcome(db: asyncpg.Pool | asyncpg.Connection, result: CommandResult) -> bool:
    """Apply one command result; False when the operation was unknown or already final."""
    if isinstance(result, CommandSucceeded):
        status, code, message = SUCCEEDED, None, None
    else:
        assert isinstance(result, CommandRejected)
        status, code, message = FAILED, result.code, result.reason
    outcome = await db.execute(
        "UPDATE operations SET status = $2, error_code = $3, error_message = $4, updated_at = now()"
        " WHERE operation_id = $1 AND status = $5",
        result.command_id,
        status,
        code,
        message,
        PENDING,
    )
    return outcome == "UPDATE 1"
