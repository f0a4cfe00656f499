"""Follows `havip.command-results` and settles the gateway's operations.

At-least-once: offsets are committed only after the database update, so a
crash re-reads results, and replays change nothing (only Pending rows move).
A database failure rewinds to the start of the failed batch and retries: a
result is never skipped, or its operation would stay Pending forever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord
from pydantic import ValidationError

from schemas import topics
from schemas.errors import ErrorCode
from services.gateway import operations
from services.gateway.observability import COMMAND_RESULTS
from services.runtime.deadletters import DeadLetters
from services.runtime.kafka import new_consumer, topic_name
from services.runtime.settings import Settings
from services.runtime.tasks import cancel_and_wait

log = logging.getLogger(__name__)

# On the embedded broker a group join takes about half the rebalance timeout;
# the default (60 s) would keep a fresh gateway unready for half a minute.
_REBALANCE_TIMEOUT_MS = 6000


class _CommitOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, results: CommandResults) -> None:
        self._results = results

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        lost = set(revoked)
        await self._results.commit_applied(lost)
        self._results.forget(lost)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        # Joined, even with no partitions: a replica beyond the partition
        # count is still a healthy member waiting for a share.
        self._results.joined = True
        log.info("command results assigned partitions=%s", sorted(tp.partition for tp in assigned))


class CommandResults:
    def __init__(
        self, settings: Settings, pool: asyncpg.Pool, dead_letters: DeadLetters, retry_delay: float = 1.0
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._dead_letters = dead_letters
        self._retry_delay = retry_delay
        self._topic = topic_name(settings, topics.RESULTS)
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        # Applied to the database but not yet committed to the broker.
        self._applied: dict[TopicPartition, int] = {}
        self.joined = False

    def start(self) -> None:
        """Join the group in the background: a restarted gateway's join waits out its old member's
        session (seconds), and nothing else (VRRP reports, reads) should wait with it."""
        self._consumer = new_consumer(
            self._settings, f"{self._settings.topic_prefix}havip-gateway", rebalance_timeout_ms=_REBALANCE_TIMEOUT_MS
        )
        self._consumer.subscribe([self._topic], listener=_CommitOnRevoke(self))
        self._task = asyncio.get_running_loop().create_task(self._run(), name="command-results")

    async def _run(self) -> None:
        assert self._consumer is not None
        await self._consumer.start()
        await self._follow()

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        if self._consumer is not None:
            await self._consumer.stop()

    def not_ready(self) -> str | None:
        if self._task is not None and self._task.done():
            return "the results consumer stopped"
        if not self.joined:
            return "waiting for the consumer group: operations settle once it has joined"
        return None

    async def commit_applied(self, partitions: set[TopicPartition] | None = None) -> None:
        assert self._consumer is not None
        offsets = {tp: o for tp, o in self._applied.items() if partitions is None or tp in partitions}
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except Exception as exc:  # whoever reads them next re-applies them; replays change nothing
            log.warning("commit failed offsets=%s error=%r", offsets, exc)
            return
        for tp, offset in offsets.items():
            if self._applied.get(tp) == offset:
                del self._applied[tp]

    async def read_again(self) -> None:
        """The broker lost the topic: its offsets start again, so read what it holds from the start.

        What was applied but not committed belongs to the old log; committed into the new one
        it could make a later member skip results.
        """
        if self._consumer is None:
            return
        assigned = self._consumer.assignment()
        self._applied.clear()
        if assigned:
            await self._consumer.seek_to_beginning(*assigned)
        log.warning("command results: reading %s again from the start", self._topic)

    def forget(self, partitions: set[TopicPartition]) -> None:
        # An offset kept from an earlier ownership could move a later commit backwards.
        for tp in partitions:
            self._applied.pop(tp, None)

    async def _follow(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                batch = await self._consumer.getmany(timeout_ms=1000, max_records=500)
            except KafkaError as exc:
                # A broker outage is waited out here, not by restarting the gateway.
                log.warning("command results not fetched error=%r", exc)
                await asyncio.sleep(self._retry_delay)
                continue
            if not batch:
                continue
            try:
                await self._apply(batch)
            except Exception:
                log.exception("command results not applied; retrying the batch")
                self._rewind(batch)
                await asyncio.sleep(self._retry_delay)
                continue
            await self.commit_applied(set(batch))

    async def _apply(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        results = []
        for records in batch.values():
            for record in records:
                try:
                    if record.value is None:
                        raise ValueError("the record has no value")
                    results.append(topics.RESULTS.parse(record.value))
                except (ValidationError, ValueError) as exc:
                    await self._dead_letters.send(
                        source_topic=record.topic,
                        partition=record.partition,
                        offset=record.offset,
                        key=record.key,
                        value=record.value,
                        code=ErrorCode.MALFORMED_MESSAGE,
                        reason=str(exc),
                    )
                    COMMAND_RESULTS.labels("malformed").inc()
        outcomes = []
        async with self._pool.acquire() as conn, conn.transaction():
            for result in results:
                changed = await operations.record_outcome(conn, result)
                outcomes.append(result.type if changed else "unchanged")
        for outcome in outcomes:
            COMMAND_RESULTS.labels(outcome).inc()
        for tp, records in batch.items():
            self._applied[tp] = records[-1].offset + 1

    def _rewind(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        # Not seek_to_committed(): with nothing committed yet it leaves the
        # position where it is, which would skip the failed batch.
        assert self._consumer is not None
        for tp, records in batch.items():
            try:
                self._consumer.seek(tp, records[0].offset)
            except Exception as exc:  # revoked meanwhile: its next owner starts from the commit
                log.warning("could not rewind partition=%s error=%r", tp, exc)
