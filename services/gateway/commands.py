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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from schemas import topics
from schemas.messages import TenantCommand
from services.gateway import operations, outbox
from services.gateway.broker import BrokerLink
from services.gateway.havips import require_havip
from services.gateway.idempotency import Idempotency, in_flight
from services.gateway.operations import Operation
from services.gateway.outbox import Outbox
from services.runtime.failpoints import failpoint

log = logging.getLogger(__name__)


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

    async def submit_for_havip(
        self,
        command: TenantCommand | Callable[[], Awaitable[TenantCommand]],
        request: dict[str, Any],
        idempotency: Idempotency,
        *,
        tenant_id: str,
        havip_id: str,
    ) -> Submitted:
        """A command on an existing HAVIP; `command` may be made only once it is known to be new.

        Replay first: a retried request gets its first answer even if the HAVIP has changed since
        (a retried delete must not answer that the HAVIP does not exist). Only a new request is checked.
        """
        earlier = await self.replay(tenant_id, idempotency)
        if earlier is not None:
            return earlier
        await require_havip(self._pool, tenant_id, havip_id)
        resolved = command if not callable(command) else await command()
        return await self.submit(resolved, request, idempotency)

    async def replay(self, tenant_id: str, idempotency: Idempotency) -> Submitted | None:
        """The operation an earlier request with this key recorded (409 if its request differed), or None."""
        if idempotency.key is None:
            return None
        earlier = await operations.find_by_idempotency_key(self._pool, tenant_id, idempotency.key)
        if earlier is None:
            return None
        idempotency.check_replay(earlier.request_hash)
        return Submitted(earlier, replayed=True)

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
        raise in_flight()
