"""Stream workers on faust-streaming: the app, its resources, and the record loop.

At-least-once, never exactly-once (its exactly-once mode has open
duplicate/fencing bugs, and the embedded broker has no transactions).
A record is acknowledged only after its handler returned, i.e. after the
database commit, so a crash means the record is read again; every handler is
idempotent. A record that cannot be parsed or applied goes to the dead-letter
topic; a transient failure (database or broker away) is retried, never skipped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn

import aiokafka
import asyncpg
import faust
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from faust.tables import TableManager
from faust.transport.drivers import aiokafka as faust_aiokafka
from prometheus_client import Counter, Histogram
from pydantic import ValidationError

from schemas.errors import ErrorCode, Unappliable
from schemas.topics import Topic
from services.runtime.broker_watch import BrokerWatch, LogCheck, OnLost, advance_group_epoch, group_epoch
from services.runtime.db import DatabaseProbe, connect_pool, require_current_schema
from services.runtime.deadletters import DeadLetters
from services.runtime.health import Health, health_app, serve_http
from services.runtime.kafka import new_producer, topic_name
from services.runtime.partitions import PartitionHolding
from services.runtime.settings import Settings

log = logging.getLogger(__name__)

RECORDS = Counter("havip_stream_records_total", "Records handled", ["service", "topic", "outcome"])
HANDLE_SECONDS = Histogram(
    "havip_stream_handle_seconds",
    "Time to handle one record",
    ["service", "topic"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
)
BATCH_SECONDS = Histogram(
    "havip_stream_batch_seconds",
    "Time to apply one batch of records",
    ["service", "topic"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
)
BATCH_RECORDS = Histogram(
    "havip_stream_batch_records",
    "Records in one applied batch",
    ["service", "topic"],
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000),
)

TRANSIENT = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    asyncpg.TooManyConnectionsError,
    KafkaError,
)


# faust hard-codes a 1.5 s long-poll for its consumers. Brokers that do not end
# a long-poll when data arrives (Tansu, the embedded default) then hold every
# VRRP report for most of that time; a failover must not wait on a timer.
FETCH_MAX_WAIT_MS = 10


class _PromptConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: faust_aiokafka.Transport) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when the consumer starts
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
    def _new_transport(self) -> faust_aiokafka.Transport:
        return _PromptTransport(self.conf.broker_consumer, self)


def group_id(settings: Settings, service: str) -> str:
    """A stream worker's consumer group, before its epoch (see `new_worker`)."""
    return f"{settings.topic_prefix}havip-{service}"


def new_stream_app(settings: Settings, service: str, epoch: int = 0) -> faust.App:
    brokers = ";".join(f"kafka://{host}" for host in settings.kafka_bootstrap.split(","))
    return StreamApp(
        group_id(settings, service) + (f"-g{epoch}" if epoch else ""),
        broker=brokers,
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


Handler = Callable[[Any], Awaitable[None]]
# Applies parsed records in order; returns the ones that cannot count, as (index, Unappliable).
BatchHandler = Callable[[Sequence[Any]], Awaitable[Sequence[tuple[int, Unappliable]]]]


async def handle_stream(
    resources: WorkerResources, stream: faust.StreamT, handlers: dict[str, tuple[Topic, Handler]]
) -> None:
    """The loop of one agent. `handlers` maps a topic's full name to its parser and handler."""
    async for event in stream.events():
        await resources.ready.wait()
        msg = event.message
        topic, handler = handlers[msg.topic]
        await handle_record(resources, topic, handler, msg.topic, msg.partition, msg.offset, msg.key, event.value)


async def handle_stream_in_batches(
    resources: WorkerResources,
    stream: faust.StreamT,
    handlers: dict[str, tuple[Topic, Handler]],
    batched: tuple[str, Topic, BatchHandler],
    *,
    max_records: int,
) -> None:
    """Like `handle_stream`, but consecutive records of the `batched` topic are applied together.

    Batches form by themselves: while one is applied, the records that arrive queue up and
    become the next one (at most `max_records`), so an idle worker applies a lone record at
    once and a busy one amortises its statements over many. Records are acknowledged (their
    offsets may be committed) only after they were applied. Order is kept: a record of another
    topic ends the run before it, and the batch handler applies a run in arrival order.
    """
    queued: asyncio.Queue[faust.types.EventT] = asyncio.Queue(maxsize=2 * max_records)
    manual = stream.noack()

    async def apply_queued() -> None:
        while True:
            events = [await queued.get()]
            while len(events) < max_records and not queued.empty():
                events.append(queued.get_nowait())
            await resources.ready.wait()
            await _apply_in_order(resources, handlers, batched, events)
            for event in events:
                await manual.ack(event)

    applier = asyncio.get_running_loop().create_task(apply_queued(), name="apply-batches")
    try:
        async for event in manual.events():
            if applier.done():
                break
            await queued.put(event)
    finally:
        applier.cancel()
    applier.result()  # a failure of the applier is the agent's failure, never a silent stop


async def _apply_in_order(
    resources: WorkerResources,
    handlers: dict[str, tuple[Topic, Handler]],
    batched: tuple[str, Topic, BatchHandler],
    events: Sequence[faust.types.EventT],
) -> None:
    batched_name, batched_topic, apply_batch = batched
    run: list[faust.types.EventT] = []
    for event in events:
        msg = event.message
        if msg.topic == batched_name:
            run.append(event)
            continue
        await handle_run(resources, batched_topic, apply_batch, run)
        run = []
        topic, handler = handlers[msg.topic]
        await handle_record(resources, topic, handler, msg.topic, msg.partition, msg.offset, msg.key, event.value)
    await handle_run(resources, batched_topic, apply_batch, run)


async def handle_run(
    resources: WorkerResources, topic: Topic, apply_batch: BatchHandler, events: Sequence[faust.types.EventT]
) -> None:
    """Parse a run of records (dead-lettering the malformed), apply the rest as one batch."""
    if not events:
        return
    parsed: list[Any] = []
    origins: list[faust.types.EventT] = []
    for event in events:
        try:
            parsed.append(topic.parse(event.value or b""))
        except ValidationError as exc:
            await _dead_letter(resources, topic, event, ErrorCode.MALFORMED_MESSAGE, _validation_reason(exc))
            continue
        origins.append(event)
    if not parsed:
        return
    refusals: Sequence[tuple[int, Unappliable]] = []

    async def apply() -> None:
        nonlocal refusals
        refusals = await apply_batch(parsed)

    started = time.perf_counter()
    try:
        await _retry_transient(apply)
    except Exception:  # a bug: find the record behind it, so the others still apply
        log.exception("a batch of %d failed; applying its records one at a time", len(parsed))
        for value, event in zip(parsed, origins, strict=True):
            await handle_one(resources, topic, apply_batch, value, event)
        return
    BATCH_SECONDS.labels(resources.service, topic.name).observe(time.perf_counter() - started)
    BATCH_RECORDS.labels(resources.service, topic.name).observe(len(parsed))
    refused = dict(refusals)
    for index, event in enumerate(origins):
        if index in refused:
            await _dead_letter(resources, topic, event, refused[index].code, refused[index].message)
        else:
            RECORDS.labels(resources.service, topic.name, "applied").inc()


async def handle_one(
    resources: WorkerResources, topic: Topic, apply_batch: BatchHandler, value: Any, event: faust.types.EventT
) -> None:
    async def apply_alone(_: Any) -> None:
        for _, refusal in await apply_batch([value]):
            raise refusal

    msg = event.message
    await handle_record(resources, topic, apply_alone, msg.topic, msg.partition, msg.offset, msg.key, event.value)


async def _dead_letter(
    resources: WorkerResources, topic: Topic, event: faust.types.EventT, code: str, reason: str
) -> None:
    msg = event.message
    await _send_dead_letter(resources, topic, msg.topic, msg.partition, msg.offset, msg.key, event.value, code, reason)


async def _send_dead_letter(
    resources: WorkerResources,
    topic: Topic,
    source_topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    code: str,
    reason: str,
) -> None:
    await _retry_transient(
        lambda: resources.dead_letters.send(
            source_topic=source_topic,
            partition=partition,
            offset=offset,
            key=key,
            value=value,
            code=code,
            reason=reason,
        )
    )
    RECORDS.labels(resources.service, topic.name, "dead-lettered").inc()


async def handle_record(
    resources: WorkerResources,
    topic: Topic,
    handler: Handler,
    source_topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
) -> None:
    async def dead_letter(code: str, reason: str) -> None:
        await _send_dead_letter(resources, topic, source_topic, partition, offset, key, value, code, reason)

    try:
        parsed = topic.parse(value or b"")
    except ValidationError as exc:
        await dead_letter(ErrorCode.MALFORMED_MESSAGE, _validation_reason(exc))
        return
    with HANDLE_SECONDS.labels(resources.service, topic.name).time():
        try:
            await _retry_transient(lambda: handler(parsed))
        except Unappliable as exc:
            await dead_letter(exc.code, exc.message)
            return
        except Exception as exc:  # a bug must not stop the partition; the record is kept
            log.exception("handler failed topic=%s partition=%s offset=%s", source_topic, partition, offset)
            await dead_letter(ErrorCode.APPLY_FAILED, f"{type(exc).__name__}: {exc}")
            return
    RECORDS.labels(resources.service, topic.name, "applied").inc()


async def _retry_transient(action: Callable[[], Awaitable[None]]) -> None:
    delay = 0.1
    while True:
        try:
            await action()
            return
        except TRANSIENT as exc:
            log.warning("transient failure, retrying in %.1fs: %r", delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def _validation_reason(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {err['msg']}" for err in exc.errors()[:10])


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
