"""Keeps a RouteTable in step with `havip.mappings`: a snapshot, then the stream.

Every forwarder replica reads every partition (no consumer group, manual
assignment), so each holds the whole table.

Start-up order, and why:
  (a) read the end offset of every partition;
  (b) load the snapshot from Postgres and apply it;
  (c) seek every partition to the end offset of (a) and follow from there.
The mapping service publishes a HAVIP's state after committing it, so every
record before the offsets of (a) is already in the snapshot of (b), and every
change committed after the snapshot was read is published after (a), hence
read from the stream. Reading the offsets after the snapshot instead would
skip a change committed and published between the two. Records the snapshot
and the stream both carry are harmless: the table applies by version.

The table is "caught up" once every partition's position reached the offsets
of (a). After a broker or database error the follower logs, waits and carries
on from the next offset it has not applied yet; the table keeps answering
from memory meanwhile. When the broker lost the topic (see
services/runtime/broker_watch.py) those offsets mean nothing any more:
`reload` starts again from (a).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Iterable

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from schemas import topics
from schemas.errors import ErrorCode, HaVipError, Unappliable
from schemas.messages import HaVipMappingChanged
from services.forwarder.metrics import (
    APPLIED,
    APPLY_LAG,
    CAUGHT_UP,
    CONSUMER_LAG,
    CONVERGENCE,
    ERRORS,
    STALE,
    TABLE_SIZE,
)
from services.forwarder.routes import RouteState, RouteTable
from services.readmodel.mappings import stream_route_rows
from services.runtime.consume import Delivery, Kernel, Registry
from services.runtime.deadletters import DeadLetters
from services.runtime.kafka import new_consumer, new_producer, topic_name
from services.runtime.settings import Settings
from services.runtime.tasks import cancel_and_wait

log = logging.getLogger(__name__)

CONSUMER_NAME = "forwarder"


class MappingFollower:
    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        table: RouteTable | None = None,
        *,
        retry_seconds: float = 1.0,
    ) -> None:
        self.table = table if table is not None else RouteTable()
        self._settings = settings
        self._pool = pool
        self._topic = topic_name(settings, topics.MAPPINGS)
        self._retry_seconds = retry_seconds
        # The next offset to apply per partition; None until the snapshot is in.
        self._next: dict[TopicPartition, int] | None = None
        self._start_offsets: dict[TopicPartition, int] = {}
        self._caught_up = False
        self._stage = "not started"
        self._producer: AIOKafkaProducer | None = None
        self._dead_letters: DeadLetters | None = None
        self._task: asyncio.Task[None] | None = None
        registry = Registry()
        registry.read(self._topic, topics.MAPPINGS, check=_keyed_by_havip)
        registry.on(HaVipMappingChanged, self._on_mapping)
        self._kernel = Kernel(CONSUMER_NAME, registry, self._dead_letter_sink)

    # --- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="mapping-follower")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def reload(self) -> None:
        """Start again from a fresh snapshot: the topic lost what the table was built from.

        The table keeps answering meanwhile; the snapshot only moves it forward (by version).
        """
        await cancel_and_wait(self._task)
        self._next = None
        self._caught_up = False
        CAUGHT_UP.set(0)
        log.warning("reloading the snapshot: the broker lost %s", self._topic)
        self.start()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def caught_up(self) -> bool:
        return self._caught_up

    def positions(self) -> dict[int, int]:
        """The next offset to apply, per partition of the mappings topic (empty before the snapshot)."""
        return {tp.partition: offset for tp, offset in (self._next or {}).items()}

    def not_caught_up(self) -> str | None:
        """A readiness check: None once caught up, else what it is doing."""
        return None if self._caught_up else self._stage

    # --- the loop --------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            consumer = new_consumer(self._settings, None)
            try:
                self._stage = "connecting to the broker"
                await consumer.start()
                await self._ensure_dead_letters()
                partitions = await self._partitions(consumer)
                consumer.assign(partitions)
                if self._next is None:
                    await self._bootstrap(consumer, partitions)
                else:
                    for tp in partitions:
                        if tp in self._next:
                            consumer.seek(tp, self._next[tp])
                        else:  # a partition added since start: all of it is new
                            await consumer.seek_to_beginning(tp)
                await self._follow(consumer)
            except asyncio.CancelledError:
                raise
            except Exception:
                ERRORS.inc()
                log.exception(
                    "following %s failed while %s; retrying in %ss", self._topic, self._stage, self._retry_seconds
                )
            finally:
                await _quietly_stop(consumer)
            await asyncio.sleep(self._retry_seconds)

    async def _ensure_dead_letters(self) -> None:
        if self._producer is not None:
            return
        self._stage = "starting the dead-letter producer"
        producer = new_producer(self._settings)
        try:
            await producer.start()
        except BaseException:
            await _quietly_stop(producer)
            raise
        self._producer = producer
        self._dead_letters = DeadLetters(producer, self._settings, CONSUMER_NAME)

    async def _partitions(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        self._stage = f"waiting for topic {self._topic}"
        while True:
            await consumer.topics()  # refreshes the cluster metadata
            found = consumer.partitions_for_topic(self._topic)
            if found:
                return [TopicPartition(self._topic, p) for p in sorted(found)]
            log.warning("topic %s has no partitions yet; waiting", self._topic)
            await asyncio.sleep(self._retry_seconds)

    async def _bootstrap(self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> None:
        self._stage = "reading end offsets"
        ends = await consumer.end_offsets(partitions)
        self._stage = "loading the snapshot"
        started = time.monotonic()
        read = applied = 0
        # The snapshot builds objects that live as long as the process and are never in a cycle:
        # the cyclic collector would scan them over and over while they are made (a third of the
        # load), and at every full collection afterwards. So it is off meanwhile, and then they
        # are moved out of its sight for good (gc.freeze; they are still freed by reference count).
        gc.disable()
        try:
            async for rows in stream_route_rows(self._pool):
                read += len(rows)
                for row in rows:
                    applied += self.table.apply_state(RouteState._make(row))
        finally:
            gc.enable()
        gc.freeze()
        APPLIED.labels("snapshot").inc(applied)
        STALE.inc(read - applied)
        TABLE_SIZE.set(len(self.table))
        log.info(
            "snapshot applied havips=%s changed=%s seconds=%.2f end_offsets=%s",
            read,
            applied,
            time.monotonic() - started,
            {tp.partition: offset for tp, offset in ends.items()},
        )
        self._start_offsets = dict(ends)
        self._next = dict(ends)
        for tp, offset in ends.items():
            consumer.seek(tp, offset)

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        self._stage = "catching up" if not self._caught_up else "following"
        await self._check_caught_up(consumer)
        while True:
            batch = await consumer.getmany(timeout_ms=500, max_records=1000)
            for records in batch.values():
                await self._handle(records)
            self._measure_lag(consumer)
            if not self._caught_up:
                await self._check_caught_up(consumer)

    def _measure_lag(self, consumer: AIOKafkaConsumer) -> None:
        # The high watermark as of the last fetch: no request to the broker for it.
        assert self._next is not None
        for tp, offset in self._next.items():
            highwater = consumer.highwater(tp)
            if highwater is not None:
                CONSUMER_LAG.labels(str(tp.partition)).set(max(0, highwater - offset))

    async def _check_caught_up(self, consumer: AIOKafkaConsumer) -> None:
        for tp, end in self._start_offsets.items():
            if await consumer.position(tp) < end:
                return
        if not self._caught_up:
            log.info("caught up havips=%s", len(self.table))
        self._caught_up = True
        self._stage = "following"
        CAUGHT_UP.set(1)

    async def _handle(self, records: Iterable[ConsumerRecord[bytes, bytes]]) -> None:
        assert self._next is not None
        deliveries = []
        for record in records:
            if record.value is None:
                # A tombstone carries no version to order it by; deletion
                # travels as a `Deleted` state, so there is nothing to do.
                STALE.inc()
            else:
                deliveries.append(Delivery(record.topic, record.partition, record.offset, record.key, record.value))
        # In memory only: nothing here waits for a database or can be worth reading again.
        await self._kernel.apply(deliveries)
        for record in records:
            self._next[TopicPartition(record.topic, record.partition)] = record.offset + 1
        TABLE_SIZE.set(len(self.table))

    async def _on_mapping(self, mapping: HaVipMappingChanged) -> None:
        try:
            changed = self.table.apply(mapping)
        except HaVipError as exc:
            raise Unappliable(ErrorCode.MALFORMED_MESSAGE, f"unusable address: {exc}") from exc
        if not changed:
            STALE.inc()
            return
        APPLIED.labels("stream").inc()
        now = time.time()
        APPLY_LAG.set(max(0.0, now - mapping.occurred_at.timestamp()))
        if mapping.report_received_at is not None:
            CONVERGENCE.observe(max(0.0, now - mapping.report_received_at.timestamp()))

    def _dead_letter_sink(self) -> DeadLetters:
        assert self._dead_letters is not None
        return self._dead_letters


def _keyed_by_havip(delivery: Delivery, mapping: HaVipMappingChanged) -> str | None:
    # Compaction keeps the last record per key: a key that is not the HAVIP
    # would let compaction drop this HAVIP's state or keep a stale one.
    if delivery.key is not None and delivery.key != mapping.havip_id.encode():
        return f"key {delivery.key!r} is not the havip_id {mapping.havip_id!r}"
    return None


async def _quietly_stop(client: AIOKafkaConsumer | AIOKafkaProducer) -> None:
    try:
        await client.stop()
    except Exception:
        log.debug("stopping a Kafka client failed", exc_info=True)
