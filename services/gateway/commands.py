"""Submitting a tenant's command: record the operation and the command together, then publish.

The operation row and the command (in the outbox) are written in one
transaction, so a 202 never names an operation that does not exist, and a
command once recorded is published even if this gateway dies a moment later
(see outbox.py). The command's id is the operation's id, so every result on
`havip.command-results` finds its row. A reused Idempotency-Key answers
with the operation it first created, and never records twice.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from schemas import topics
from schemas.errors import ErrorCode, HaVipError
from schemas.messages import TenantCommand
from services.gateway import operations, outbox
from services.gateway.broker import BrokerLink
from services.gateway.operations import Operation
from services.gateway.outbox import Outbox
from services.runtime.failpoints import failpoint

log = logging.getLogger(__name__)


def new_operation_id() -> str:
    return f"op-{uuid.uuid4().hex}"


@dataclass(frozen=True)
class Idempotency:
    key: str | None
    request_hash: str


@dataclass(frozen=True)
class Submitted:
    operation: Operation
    replayed: bool


class CommandSubmitter:
    def __init__(self, pool: asyncpg.Pool, broker: BrokerLink, commands: Outbox) -> None:
        self._pool = pool
        self._broker = broker
        self._outbox = commands

    async def submit(self, command: TenantCommand, request: dict[str, Any], idempotency: Idempotency) -> Submitted:
        # Refuse before recording anything while the broker is known to be away: the
        # tenant gets a 503 to retry, not an operation that waits for the broker.
        self._broker.require_reachable()
        recorded = await self._record(command, request, idempotency)
        if recorded.replayed:
            return recorded
        failpoint("gateway.command-recorded")
        # Best effort: if this fails the command stays in the outbox and the relay publishes it.
        await self._outbox.deliver(command.command_id)
        return recorded

    async def replay(self, tenant_id: str, idempotency: Idempotency) -> Submitted | None:
        """The operation an earlier request with this key recorded (409 if its request differed), or None."""
        if idempotency.key is None:
            return None
        earlier = await operations.find_by_idempotency_key(self._pool, tenant_id, idempotency.key)
        return _replay(earlier, idempotency) if earlier is not None else None

    async def _record(self, command: TenantCommand, request: dict[str, Any], idempotency: Idempotency) -> Submitted:
        tenant_id = command.tenant_id
        # Two attempts: a concurrent request holding the key wins the insert; we then answer as it did.
        for _ in range(2):
            earlier = await self.replay(tenant_id, idempotency)
            if earlier is not None:
                return earlier
            try:
                async with self._pool.acquire() as conn, conn.transaction():
                    created = await operations.insert_operation(
                        conn,
                        operation_id=command.command_id,
                        tenant_id=tenant_id,
                        kind=command.type,
                        havip_id=command.havip_id,
                        request=request,
                        idempotency_key=idempotency.key,
                        request_hash=idempotency.request_hash,
                    )
                    await outbox.record(conn, command.command_id, command.havip_id, topics.encode(command))
                return Submitted(created, replayed=False)
            except asyncpg.UniqueViolationError:
                continue
        raise HaVipError(
            ErrorCode.SERVICE_UNAVAILABLE, "a request with this Idempotency-Key is in flight; retry", retry_after=1
        )


def _replay(earlier: Operation, idempotency: Idempotency) -> Submitted:
    if earlier.request_hash != idempotency.request_hash:
        raise HaVipError(ErrorCode.IDEMPOTENT_MISMATCH, "this Idempotency-Key was used with a different request")
    return Submitted(earlier, replayed=True)
