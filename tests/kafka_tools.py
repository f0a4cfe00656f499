"""Small helpers for tests that put records on topics and read them back."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer

from schemas.topics import Topic
from services.runtime.kafka import topic_name
from services.runtime.settings import Settings


async def read_topic(settings: Settings, topic: Topic, *, until: int, timeout: float = 30.0) -> list[Any]:
    """Read a topic from the start until `until` records arrived (or time runs out)."""
    consumer = AIOKafkaConsumer(
        topic_name(settings, topic),
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
    )
    await consumer.start()
    found: list[Any] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(found) < until and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                found.extend(topic.parse(r.value) for r in records)
    finally:
        await consumer.stop()
    return found
