"""The one Kafka client factory, and topic creation.

Everything is at-least-once: no idempotent or transactional producer (the
embedded broker has neither), `acks="all"` so an acknowledged message is on
every in-sync replica, and consumers commit only after their database commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context

from schemas.topics import ALL, Topic
from services.runtime.settings import Settings

log = logging.getLogger(__name__)


def topic_name(settings: Settings, topic: Topic) -> str:
    return f"{settings.topic_prefix}{topic.name}"


def security_options(settings: Settings) -> dict[str, object]:
    """How every client reaches the cluster: the TLS and SASL arguments of every aiokafka client."""
    protocol = settings.kafka_security_protocol
    # Said when the first client is made, at start, rather than as an authentication failure
    # retried forever. Not in Settings: `havip migrate` needs no broker and gets no credentials.
    if protocol.startswith("SASL") and not (
        settings.kafka_sasl_username and settings.kafka_sasl_password.get_secret_value()
    ):
        raise ValueError(f"{protocol} needs HAVIP_KAFKA_SASL_USERNAME and HAVIP_KAFKA_SASL_PASSWORD")
    if bool(settings.kafka_ssl_certfile) != bool(settings.kafka_ssl_keyfile):
        raise ValueError("HAVIP_KAFKA_SSL_CERTFILE and HAVIP_KAFKA_SSL_KEYFILE go together")
    options: dict[str, object] = {"security_protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = client_ssl_context(settings)
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return options


def client_ssl_context(settings: Settings) -> ssl.SSLContext:
    """Verifies the brokers' certificates and host names; presents a client certificate when given one."""
    return create_ssl_context(
        cafile=settings.kafka_ssl_cafile or None,
        certfile=settings.kafka_ssl_certfile or None,
        keyfile=settings.kafka_ssl_keyfile or None,
    )


def new_producer(settings: Settings) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        **security_options(settings),
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
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        session_timeout_ms=int(settings.session_timeout_seconds * 1000),
        heartbeat_interval_ms=1000,
        **security_options(settings),
    )
    options.update(overrides)
    return AIOKafkaConsumer(**options)


def new_admin(settings: Settings, **overrides: object) -> AIOKafkaAdminClient:
    options = {**security_options(settings), **overrides}
    return AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, **options)


async def wait_for_broker(settings: Settings, timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        admin = new_admin(settings)
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
    admin = new_admin(settings)
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
            with contextlib.suppress(TopicAlreadyExistsError):  # another process was first
                await admin.create_topics(wanted)
            created = [t.name for t in wanted]
    finally:
        await admin.close()
    return created


class ConsumerGroupProgress:
    """Has a consumer group committed everything a topic held when we asked?

    Lets a worker tell "this resource does not exist" from "our inventory
    copy has not caught up yet" before it answers a tenant with NotFound.
    Uses a consumer that never subscribes, so it never joins the group.
    """

    def __init__(self, settings: Settings, group_id: str, topic: str) -> None:
        self._settings = settings
        self._group_id = group_id
        self._topic = topic
        self._probe: AIOKafkaConsumer | None = None

    async def wait_caught_up(self, timeout: float) -> bool:
        if self._probe is None:
            self._probe = new_consumer(self._settings, self._group_id)
            await self._probe.start()
        partitions = self._probe.partitions_for_topic(self._topic)
        if not partitions:
            await self._probe._client.force_metadata_update()  # first use: learn the topic's partitions
            partitions = self._probe.partitions_for_topic(self._topic) or set()
        wanted = await self._probe.end_offsets([TopicPartition(self._topic, p) for p in partitions])
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            committed = {tp: await self._probe.committed(tp) or 0 for tp in wanted}
            if all(committed[tp] >= end for tp, end in wanted.items()):
                return True
            if asyncio.get_running_loop().time() > deadline:
                log.warning(
                    "group has not caught up with %s after %ss: %s < %s", self._topic, timeout, committed, wanted
                )
                return False
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._probe is not None:
            await self._probe.stop()
