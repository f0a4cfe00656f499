"""Stream workers on faust-streaming: the app and its resources (the record loop is records.py).

At-least-once, never exactly-once (its exactly-once mode has open
duplicate/fencing bugs, and the embedded broker has no transactions).
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import sys
from collections.abc import Awaitable, Sequence
from typing import Any, NoReturn

import aiokafka
import asyncpg
import faust
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from faust.tables import TableManager
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types.auth import CredentialsT

from schemas.topics import Topic
from services.runtime.broker_watch import BrokerWatch, LogCheck, OnLost, advance_group_epoch, group_epoch
from services.runtime.db import DatabaseProbe, connect_pool, require_current_schema
from services.runtime.deadletters import DeadLetters
from services.runtime.health import Health, health_app, serve_http
from services.runtime.kafka import new_producer, security_options, topic_name
from services.runtime.partitions import PartitionHolding
from services.runtime.settings import Settings

log = logging.getLogger(__name__)

TRANSIENT = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # a connection left mid-protocol by a server that died
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    asyncpg.TooManyConnectionsError,
    KafkaError,
)


# faust hard-codes a 1.5 s long-poll for its consumers. Brokers that do not end
# a long-poll when data arrives (Tansu, the embedded default) then hold every
# VRRP report for most of that time; a failover must not wait on a timer. The
# long-poll is `Settings.kafka_fetch_max_wait_ms` instead, as for every consumer.
class _PromptConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: faust_aiokafka.Transport) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        app = transport.app
        assert isinstance(app, StreamApp)
        consumer._fetch_max_wait_ms = app.fetch_max_wait_ms  # read when the consumer starts
        return consumer


class _PromptConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _PromptConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _PromptTransport(faust_aiokafka.Transport):
    Consumer = _PromptConsumer


class _PromptTableManager(TableManager):
    async def on_start(self) -> None:
        # faust sleeps a second here before it lets the consumer subscribe; our workers have no
        # tables, and a restarted worker's partitions stand still until it joins.
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


class StreamApp(faust.App):
    fetch_max_wait_ms = 10  # set from the settings by new_stream_app

    def _new_transport(self) -> faust_aiokafka.Transport:
        return _PromptTransport(self.conf.broker_consumer, self)


def group_id(settings: Settings, service: str) -> str:
    """A stream worker's consumer group, before its epoch (see `new_worker`)."""
    return f"{settings.topic_prefix}havip-{service}"


def broker_credentials(settings: Settings) -> CredentialsT | None:
    """faust's form of `security_options`: the same TLS and SASL for its consumer and producer."""
    options = security_options(settings)
    context = options.get("ssl_context")
    assert context is None or isinstance(context, ssl.SSLContext)
    if "sasl_mechanism" in options:
        return faust.SASLCredentials(
            username=str(options["sasl_plain_username"]),
            password=str(options["sasl_plain_password"]),
            ssl_context=context,
            mechanism=str(options["sasl_mechanism"]),
        )
    return faust.SSLCredentials(context) if context is not None else None


def new_stream_app(settings: Settings, service: str, epoch: int = 0) -> faust.App:
    brokers = ";".join(f"kafka://{host}" for host in settings.kafka_bootstrap.split(","))
    app = StreamApp(
        group_id(settings, service) + (f"-g{epoch}" if epoch else ""),
        broker=brokers,
        broker_credentials=broker_credentials(settings),
        web_enabled=False,
        topic_allow_declare=False,  # topics are created by `havip topics`, never on the fly
        topic_disable_leader=True,
        producer_acks=-1,
        broker_session_timeout=settings.worker_session_timeout_seconds,
        broker_rebalance_timeout=settings.worker_session_timeout_seconds,
        broker_heartbeat_interval=settings.worker_heartbeat_interval_seconds,
        consumer_group_instance_id=settings.worker_group_instance_id or None,
        broker_commit_interval=0.5,
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=False,
        store="memory://",
        TableManager=_PromptTableManager,
    )
    app.fetch_max_wait_ms = settings.kafka_fetch_max_wait_ms
    return app


def raw_topic(app: faust.App, settings: Settings, *topics: Topic) -> faust.TopicT:
    return app.topic(*(topic_name(settings, t) for t in topics), key_serializer="raw", value_serializer="raw")


def new_worker(settings: Settings, service: str, health_port: int) -> tuple[faust.App, WorkerResources]:
    """A stream app with its resources (pool, producer, dead letters, health server) attached."""
    # After the broker lost its topics the workers join a new group (see consumer_group_epochs).
    epoch = _blocking(_read_epoch(settings, service))
    app = new_stream_app(settings, service, epoch)
    resources = WorkerResources(settings, service, epoch)
    resources.attach(app, health_port)
    return app, resources


async def _read_epoch(settings: Settings, service: str) -> int:
    pool = await connect_pool(settings.database_url, max_size=1)
    try:
        return await group_epoch(pool, group_id(settings, service))
    finally:
        await pool.close()


def _blocking(work: Awaitable[int]) -> int:
    # Not asyncio.run: it would leave no current event loop for the faust worker that follows.
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(work)
    finally:
        loop.close()


class WorkerResources:
    """What every stream handler needs, opened once when the worker starts."""

    def __init__(self, settings: Settings, service: str, epoch: int = 0) -> None:
        self.settings = settings
        self.service = service
        self.epoch = epoch
        self.health = Health(service)
        self.ready = asyncio.Event()
        self.pool: asyncpg.Pool
        self.producer: AIOKafkaProducer
        self.dead_letters: DeadLetters
        self._recoveries: list[OnLost] = []
        self.health.add_check("resources", lambda: None if self.ready.is_set() else "starting")

    def attach(self, app: faust.App, port: int) -> None:
        @app.task
        async def keep_resources() -> None:
            await self._open(port)
            try:
                await asyncio.Event().wait()
            finally:
                await self._close()

        self.partitions = PartitionHolding(app, self.settings)
        self.health.add_check("partitions", self.partitions.problem)

        @app.on_rebalance_complete.connect
        async def on_rebalanced(sender: Any, **_: Any) -> None:
            self.partitions.on_rebalance_complete()

    async def _open(self, port: int) -> None:
        self.health.start()
        self._http = asyncio.get_running_loop().create_task(
            serve_http(health_app(self.health), self.settings.http_host, port)
        )
        self.pool = await connect_pool(self.settings.database_url)
        await require_current_schema(self.pool)
        self._database = DatabaseProbe(self.pool)
        self._database.start()
        self.health.add_check("database", lambda: self._database.problem)
        self.producer = new_producer(self.settings)
        await self.producer.start()
        self.dead_letters = DeadLetters(self.producer, self.settings, self.service)
        self._broker = BrokerWatch(
            self.settings, self.service, self.pool, self._on_broker_lost, on_recovered=self._restart_consumers
        )
        self._broker.start()
        self.health.add_check("broker", lambda: self._broker.problem)
        self.ready.set()
        log.info("resources ready")

    def on_broker_lost(self, recovery: OnLost) -> None:
        """Something this service must redo, from PostgreSQL, when the broker lost its topics."""
        self._recoveries.append(recovery)

    async def _on_broker_lost(self, check: LogCheck) -> None:
        for recovery in self._recoveries:
            await recovery(check)
        await advance_group_epoch(self.pool, group_id(self.settings, self.service), self.epoch)

    def _restart_consumers(self) -> None:
        # faust remembers the offsets it read and skips any record at or below them, and the group's
        # offsets were committed against the lost log: only fresh consumers in a new group are safe.
        request_restart("the broker lost our topics: starting again with fresh consumers in a new group")

    async def _close(self) -> None:
        await self.partitions.stop()
        await self._broker.stop()
        await self._database.stop()
        self._http.cancel()
        await self.producer.stop()
        await self.pool.close()

    async def publish(self, topic: Topic, key: str, value: bytes) -> None:
        await self.producer.send_and_wait(topic_name(self.settings, topic), key=key.encode(), value=value)

    async def publish_many(self, topic: Topic, records: Sequence[tuple[str, bytes]]) -> None:
        """Hand every record to the producer at once (it batches them), then wait for all."""
        name = topic_name(self.settings, topic)
        sent = [await self.producer.send(name, key=key.encode(), value=value) for key, value in records]
        await asyncio.gather(*sent)


def request_restart(reason: str) -> NoReturn:
    """Start again at once, in this same process, with fresh consumers.

    No graceful stop: what it would commit belongs to the lost log and the old group, and the new
    group has no member to wait for. The same PID, so a supervisor (havip dev up, Kubernetes) sees
    no crash and nothing to back off from; what was in flight is read again in the new group.
    """
    log.warning("restarting: %s", reason)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def run_worker(app: faust.App, settings: Settings) -> None:
    worker = faust.Worker(app, loglevel=settings.log_level.lower(), quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
