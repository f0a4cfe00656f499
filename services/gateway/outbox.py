"""The command outbox: a command recorded with its operation is published, whatever dies when.

A mutation writes its operation and the encoded command in one transaction,
then publishes it and marks the row published. If the gateway dies between
the two, or the broker is away, the row stays unpublished; every gateway
replica runs a relay that publishes rows older than a moment (so it does not
race the request that is publishing its own). Rows are taken `FOR UPDATE
SKIP LOCKED`, so two replicas never publish one row at the same time, and a
command published twice anyway (a crash after the publish, before the mark)
is a redelivery quota answers with the same decision.

A row is deleted only when its operation ends (operations.record_outcome).
Until then it can be published again: when the broker lost its topics, every
Pending operation's command is marked unpublished and the relay sends it
again, and each service answers it as the redelivery it is.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import asyncpg

from services.gateway.broker import BrokerLink
from services.runtime.tasks import cancel_and_wait
from services.runtime.transient import BROKER_UNAVAILABLE, TRANSIENT

log = logging.getLogger(__name__)


async def record(conn: asyncpg.Connection, operation_id: str, key: str, value: bytes) -> None:
    """Inside the transaction that records the operation."""
    await conn.execute(
        "INSERT INTO command_outbox (operation_id, topic_key, value) VALUES ($1, $2, $3)", operation_id, key, value
    )


class Outbox:
    def __init__(
        self,
        pool: asyncpg.Pool,
        broker: BrokerLink,
        topic: str,
        *,
        relay_every: float = 0.5,
        relay_after: timedelta = timedelta(seconds=1),
    ) -> None:
        self._pool = pool
        self._broker = broker
        self._topic = topic
        self._relay_every = relay_every
        self._relay_after = relay_after
        self._task: asyncio.Task[None] | None = None

    async def deliver(self, operation_id: str) -> bool:
        """Publish one recorded command and mark it published; False when it stays for the relay."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT topic_key, value FROM command_outbox WHERE operation_id = $1 AND published_at IS NULL"
                " FOR UPDATE SKIP LOCKED",
                operation_id,
            )
            if row is None:
                return True  # already delivered (by the relay, or a replay of this request)
            try:
                await self._broker.publish(self._topic, row["topic_key"].encode(), row["value"])
            except BROKER_UNAVAILABLE as exc:
                log.warning("command kept for the relay operation=%s error=%r", operation_id, exc)
                return False
            await conn.execute("UPDATE command_outbox SET published_at = now() WHERE operation_id = $1", operation_id)
        return True

    async def relay_once(self) -> int:
        """Publish what was recorded but not published; how many went out."""
        if not self._broker.reachable and not await self._broker.probe():
            return 0
        waiting = await self._pool.fetch(
            "SELECT operation_id FROM command_outbox WHERE published_at IS NULL AND created_at < now() - $1::interval"
            " ORDER BY created_at LIMIT 100",
            self._relay_after,
        )
        delivered = 0
        for row in waiting:
            if not await self.deliver(row["operation_id"]):
                break  # the broker went away again: try later, in order
            delivered += 1
        if delivered:
            log.info("outbox relay published %d recorded command(s)", delivered)
        return delivered

    async def unpublish_pending(self) -> int:
        """The broker lost its topics: publish every unsettled command again (the relay will)."""
        status = await self._pool.execute(
            "UPDATE command_outbox SET published_at = NULL WHERE published_at IS NOT NULL"
        )
        count = int(status.split()[-1])
        log.warning("outbox: %d command(s) of Pending operations will be published again", count)
        return count

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._relay(), name="command-outbox-relay")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _relay(self) -> None:
        while True:
            try:
                await self.relay_once()
            except (*TRANSIENT, asyncpg.PostgresError) as exc:
                log.warning("outbox relay failed, retrying: %r", exc)
            await asyncio.sleep(self._relay_every)
