"""The one Kafka client factory, and topic creation.

Everything is at-least-once: no idempotent or transactional producer (the
embedded broker has neither), `acks="all"` so an acknowledged message is on
every in-sync replica, and consumers commit only after their database commit.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from schemas.topics import ALL, Topic
from services.runtime.settings import Settings

log = logging.getLogger(__name__)


def topic_name(settings: Settings, topic: Topic) -> str:
    return f"{settings.topic_prefix}{topic.name}"


def new_producer(settings: Settings) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        enable_idempotence=False,
        linger_ms=0,
        request_timeout_ms=15000,
    )


def new_consumer(settings: Settings, group_id: str | None, **overrides: object) -> AIOKafkaConsumer:
    options: dict[str, object] = dict(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        # A short long-poll: a VRRP failover must not wait for a fetch timeout.
        fetch_max_wait_ms=10,
        session_timeout_ms=int(settings.session_timeout_seconds * 1000),
        heartbeat_interval_ms=1000,
    )
    options.update(overrides)
    return AIOKafkaConsumer(**options)


async def wait_for_broker(settings: Settings, timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        try:
            await admin.start()
            await admin.list_topics()
            return
        except KafkaConnectionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)
        finally:
            await admin.close()


async def ensure_topics(settings: Settings) -> list[str]:
    """Create every topic the system uses; topics that exist are left as they are.

    Topics are created up front, never auto-created, so every topic keyed by
    havip_id has the same partition count.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    created: list[str] = []
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                topic_name(settings, topic),
                num_partitions=settings.partitions,
                replication_factor=1,
                topic_configs={"cleanup.policy": "compact"} if topic.compacted else {},
            )
            for topic in ALL
            if topic_name(settings, topic) not in existing
        ]
        if wanted:
            try:
                await admin.create_topics(wanted)
            except TopicAlreadyExistsError:
                pass
            created = [t.name for t in wanted]
    finally:
        await admin.close()
    return created
