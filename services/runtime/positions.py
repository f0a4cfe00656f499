"""Where a worker's consumer group stands in each partition, kept in PostgreSQL too.

Kafka's committed offsets say what the group applied to the database it had. When that
database loses commits it acknowledged (a crash without fsync, an asynchronous replica
promoted, a restore), Kafka is ahead of it and the lost effects would never be applied
again. The same offsets are written here before they are committed to Kafka, and a database
restored to an earlier moment brings back its earlier positions with it; a worker that is
given a partition starts from the lower of the two (`start_from`). See
schemas/migrations/0009_database_forgets.sql.
"""

from __future__ import annotations

from collections.abc import Mapping

import asyncpg
from aiokafka import TopicPartition

from services.runtime.db import INCARNATION_SQL


def start_from(
    committed: Mapping[TopicPartition, int | None], saved: Mapping[TopicPartition, int]
) -> dict[TopicPartition, int]:
    """The partitions to rewind, and where to: those whose saved position is below Kafka's.

    A partition with no saved position starts where Kafka says; one Kafka knows nothing of
    (a new group) starts where the group's reset policy says, since the saved position
    belongs to the same group and would only repeat that.
    """
    return {tp: offset for tp, offset in saved.items() if (at := committed.get(tp)) is not None and offset < at}


class AnotherDatabaseRun(Exception):
    """The database answering is not the server run these positions were read from."""


class ConsumerPositions:
    """The adapter over `consumer_positions`.

    Writes only to the server run (`incarnation`, services/runtime/db.py) the worker has caught
    up with: between a restored database coming up and the worker reading its positions again,
    the worker's own positions, ahead of it, must not be written over the ones it brought back.
    """

    def __init__(self, pool: asyncpg.Pool, incarnation: str, timeout_seconds: float = 2.0) -> None:
        self._pool = pool
        self.incarnation = incarnation
        self._timeout = timeout_seconds

    async def save(self, group_id: str, offsets: Mapping[TopicPartition, int]) -> None:
        """Raises when the database is away or another run: the caller then does not commit to Kafka either."""
        await self._write("DO UPDATE SET next_offset = excluded.next_offset, saved_at = now()", group_id, offsets)

    async def save_first(self, group_id: str, offsets: Mapping[TopicPartition, int]) -> None:
        """A position for partitions that have none; one another worker saved meanwhile is kept."""
        await self._write("DO NOTHING", group_id, offsets)

    async def _write(self, on_conflict: str, group_id: str, offsets: Mapping[TopicPartition, int]) -> None:
        # One statement: it writes only if the server run is the one these positions belong to,
        # and says which run answered, so the run cannot change between the question and the write.
        running = await self._pool.fetchval(
            f"WITH run AS (SELECT {INCARNATION_SQL} AS running),"
            " written AS ("
            "  INSERT INTO consumer_positions (group_id, topic, partition, next_offset)"
            "  SELECT $1, p.topic, p.partition, p.next_offset"
            "  FROM unnest($2::text[], $3::integer[], $4::bigint[]) AS p(topic, partition, next_offset), run"
            "  WHERE run.running = $5"
            f" ON CONFLICT (group_id, topic, partition) {on_conflict})"
            " SELECT running FROM run",
            group_id,
            [tp.topic for tp in offsets],
            [tp.partition for tp in offsets],
            list(offsets.values()),
            self.incarnation,
            timeout=self._timeout,
        )
        if running != self.incarnation:
            raise AnotherDatabaseRun(f"the database runs since {running}, positions are from {self.incarnation}")

    async def load(self, group_id: str) -> dict[TopicPartition, int]:
        rows = await self._pool.fetch(
            "SELECT topic, partition, next_offset FROM consumer_positions WHERE group_id = $1",
            group_id,
            timeout=self._timeout,
        )
        return {TopicPartition(r["topic"], r["partition"]): r["next_offset"] for r in rows}
