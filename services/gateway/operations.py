"""The `operations` table: one row per tenant mutation, from 202 to its outcome.

The row is written before the command is published, so an operation a tenant
was told about always exists; the results consumer moves it to Succeeded or
Failed exactly once (only a Pending row changes: the first outcome wins).
A command produced straight to Kafka has no row until its outcome arrives;
the outcome then creates it, so it is visible under its command_id too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from schemas.messages import CommandRejected, CommandResult, CommandSucceeded, OperationStatus

PENDING = OperationStatus.PENDING

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
    status: OperationStatus
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
        status=OperationStatus(row["status"]),
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


async def record_outcome(db: asyncpg.Pool | asyncpg.Connection, result: CommandResult) -> bool:
    """Apply one command result; False when it changed nothing (already final, or a notice that settles nothing)."""
    if isinstance(result, CommandRejected) and not result.settles_command:
        # Another command reused this id; the first keeps its own outcome.
        return False
    if isinstance(result, CommandSucceeded):
        status, code, message = OperationStatus.SUCCEEDED, None, None
    else:
        assert isinstance(result, CommandRejected)
        status, code, message = OperationStatus.FAILED, result.code, result.reason
    # Insert for a command produced straight to Kafka; otherwise settle the Pending row of the same tenant.
    outcome = await db.fetchval(
        "INSERT INTO operations (operation_id, tenant_id, kind, havip_id, status, error_code, error_message, request)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, '{}'::jsonb)"
        " ON CONFLICT (operation_id) DO UPDATE SET status = excluded.status, error_code = excluded.error_code,"
        " error_message = excluded.error_message, updated_at = now()"
        " WHERE operations.status = $8 AND operations.tenant_id = excluded.tenant_id"
        " RETURNING true",
        result.command_id,
        result.tenant_id,
        result.command_type,
        result.havip_id,
        status.value,
        code,
        message,
        PENDING.value,
    )
    if outcome:
        # Settled: its command need never be published again (see outbox.py).
        await db.execute("DELETE FROM command_outbox WHERE operation_id = $1", result.command_id)
    return bool(outcome)
