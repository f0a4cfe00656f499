"""The observer's copy of the inventory and the mapping state, followed from Kafka.

Both topics are read whole from their beginning and followed, every partition assigned
directly (no consumer group: every observer needs all of both, and keeps no position). The
observer is ready once it has read both to where they ended when it started: before that it
could take an attached instance's advert for an unexpected one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import Counter
from pydantic import ValidationError

from schemas import topics
from schemas.messages import HaVipMappingChanged
from services.observe.hostview import HostView
from services.runtime.kafka import new_consumer, topic_name
from services.runtime.settings import Settings

log = logging.getLogger(__name__)

FEED_RECORDS = Counter("havip_observe_feed_records_total", "Records read from the inventory and mappings", ["topic"])
FEED_UNREADABLE = Counter(
    "havip_observe_feed_unreadable_total", "Records the observer could not parse (their consumers dead-letter them)"
)


class Feed:
    def __init__(self, settings: Settings, view: HostView, on_ports_changed: Callable[[], None]) -> None:
        self._settings = settings
        self._view = view
        self._on_ports_changed = on_ports_changed
        self._inventory = topic_name(settings, topics.INVENTORY)
        self._mappings = topic_name(settings, topics.MAPPINGS)
        self._consumer: AIOKafkaConsumer | None = None
        self._started_ends: dict[TopicPartition, int] | None = None

    def not_caught_up(self) -> str | None:
        """None once both topics were read to where they ended at start (readiness)."""
        if self._started_ends is None:
            return "not connected to the broker yet"
        if self._started_ends:
            return f"reading the inventory and mappings: {len(self._started_ends)} partitions to go"
        return None

    async def run(self) -> None:
        # Off the failover path: an attachment reaches the observer a fraction of a second after
        # it was made, and polling the broker every 10 ms cost a busy host 7% of a core for nothing.
        consumer = new_consumer(
            self._settings, None, fetch_max_wait_ms=self._settings.kafka_operations_fetch_max_wait_ms
        )
        self._consumer = consumer
        await consumer.start()
        try:
            partitions = []
            for name in (self._inventory, self._mappings):
                for partition in await _partitions(consumer, name):
                    partitions.append(TopicPartition(name, partition))
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends = await consumer.end_offsets(partitions)
            self._started_ends = {tp: end for tp, end in ends.items() if end > 0}
            while True:
                batches = await consumer.getmany(timeout_ms=200, max_records=2000)
                for tp, records in batches.items():
                    for record in records:
                        self._apply(tp.topic, record.value)
                    self._passed(tp, records[-1].offset + 1)
                for tp in list(self._started_ends):
                    self._passed(tp, await consumer.position(tp))
        finally:
            await consumer.stop()

    def _passed(self, tp: TopicPartition, position: int) -> None:
        assert self._started_ends is not None
        end = self._started_ends.get(tp)
        if end is not None and position >= end:
            del self._started_ends[tp]
            if not self._started_ends:
                log.info("inventory and mappings read: watching %d ports", len(self._view.ports()))

    def _apply(self, topic: str, value: bytes | None) -> None:
        if value is None:
            return  # a tombstone: compaction's deletion marker, nothing to apply
        label = "inventory" if topic == self._inventory else "mappings"
        FEED_RECORDS.labels(label).inc()
        try:
            if topic == self._inventory:
                if self._view.apply_inventory(topics.INVENTORY.parse(value)):
                    self._on_ports_changed()
            else:
                mapping: HaVipMappingChanged = topics.MAPPINGS.parse(value)
                self._view.apply_mapping(mapping)
        except ValidationError as exc:
            FEED_UNREADABLE.inc()
            log.warning("unreadable record on %s skipped (its consumers dead-letter it): %s", topic, exc)


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[int]:
    # The topic may not exist yet on a new cluster (the services create it): ask until it does.
    while True:
        await consumer.topics()  # asks the broker for fresh metadata
        found = consumer.partitions_for_topic(topic)
        if found:
            return sorted(found)
        log.info("topic %s not there yet; asking again", topic)
        await asyncio.sleep(1.0)
