"""Stream workers (quota, mapping): their resources, their consumer group, their timers, their stop.

A worker is an asyncio program: it opens what every handler needs (a PostgreSQL pool, a
producer, dead letters, the health server, the broker watch), joins its consumer group with
the lanes its service declares (services/runtime/group.py, which hands records to the consume
kernel), runs its timers, and on SIGTERM or SIGINT stops gracefully: the batches under way
end, their offsets are committed and the worker leaves its group, so its partitions move at
once. When the database turns out to be a new run of its server (it may have lost commits),
the worker runs its service's recoveries and reads its partitions again from the positions
the database holds, in place. At-least-once throughout: there is no exactly-once anywhere (the embedded broker has no
transactions), and every handler is idempotent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

import asyncpg
from aiokafka import AIOKafkaProducer

from schemas.topics import Topic
from services.runtime.broker_watch import BrokerWatch, LogCheck, OnLost, advance_group_epoch, group_epoch
from services.runtime.db import DatabaseProbe, connect_pool, database_incarnation, require_current_schema
from services.runtime.deadletters import DeadLetters
from services.runtime.group import GroupConsumer, Lane
from services.runtime.health import Health, health_app, serve_http
from services.runtime.kafka import new_producer, topic_name
from services.runtime.positions import ConsumerPositions
from services.runtime.settings import Settings
from services.runtime.tasks import cancel_and_wait
from services.runtime.transient import is_transient

log = logging.getLogger(__name__)

# Run in the transaction that records a new run of the database server (see `adopt_database`).
OnNewDatabase = Callable[[asyncpg.Connection], Awaitable[None]]


def group_id(settings: Settings, service: str) -> str:
    """A stream worker's consumer group, before its epoch (see `WorkerResources.epoch`)."""
    return f"{settings.topic_prefix}havip-{service}"


@dataclass(frozen=True)
class Timer:
    """Work with no message of its own (a lease that runs out), done every `every_seconds`."""

    name: str
    every_seconds: float
    work: Callable[[], Awaitable[object]]


@dataclass
class Worker:
    """What a service's worker runs: its lanes (each applied by a kernel) and its timers."""

    lanes: Sequence[Lane]
    timers: Sequence[Timer] = field(default_factory=tuple)
    # How long a fetch may wait at the broker (None: HAVIP_KAFKA_FETCH_MAX_WAIT_MS, the failover path's).
    fetch_max_wait_ms: int | None = None


class WorkerResources:
    """What every handler needs, opened once when the worker starts."""

    def __init__(self, settings: Settings, service: str, health_port: int) -> None:
        self.settings = settings
        self.service = service
        self.health_port = health_port
        self.health = Health(service)
        self.ready = asyncio.Event()
        self.epoch = 0
        self.pool: asyncpg.Pool
        self.producer: AIOKafkaProducer
        self.dead_letters: DeadLetters
        self._recoveries: list[OnLost] = []
        self._database_recoveries: list[OnNewDatabase] = []
        self.incarnation = ""
        # Set when the database turned out to be a new run of its server (see `_database_restarted`).
        self.database_restarted = asyncio.Event()
        self._http: asyncio.Task[None] | None = None
        self.health.add_check("resources", lambda: None if self.ready.is_set() else "starting")

    async def open(self) -> None:
        self.health.start()
        self._http = asyncio.get_running_loop().create_task(
            serve_http(health_app(self.health), self.settings.http_host, self.health_port)
        )
        self.pool = await connect_pool(self.settings.database_url)
        await require_current_schema(self.pool)
        # After the broker lost its topics the workers join a new group (see consumer_group_epochs).
        self.epoch = await group_epoch(self.pool, group_id(self.settings, self.service))
        self.incarnation = await database_incarnation(self.pool)
        self._database = DatabaseProbe(
            self.pool, incarnation=self.incarnation, on_new_incarnation=self._database_restarted
        )
        self._database.start()
        self.health.add_check("database", lambda: self._database.problem)
        self.producer = new_producer(self.settings)
        await self.producer.start()
        self.dead_letters = DeadLetters(self.producer, self.settings, self.service)
        self._broker = BrokerWatch(
            self.settings, self.service, self.pool, self._on_broker_lost, on_recovered=self._restart
        )
        self._broker.start()
        self.health.add_check("broker", lambda: self._broker.problem)
        self.ready.set()
        log.info("resources ready")

    @property
    def group_id(self) -> str:
        base = group_id(self.settings, self.service)
        return f"{base}-g{self.epoch}" if self.epoch else base

    def on_broker_lost(self, recovery: OnLost) -> None:
        """Something this service must redo, from PostgreSQL, when the broker lost its topics."""
        self._recoveries.append(recovery)

    def on_new_database(self, recovery: OnNewDatabase) -> None:
        """Something this service must redo once per run of the database server (see `adopt_database`)."""
        self._database_recoveries.append(recovery)

    async def adopt_database(self) -> None:
        """Run the recoveries if no worker of this service has started against this server run yet.

        A server run not seen before may have lost commits it had acknowledged (a crash without
        fsync, a failover to an asynchronous replica, a restore): what depends on them, e.g. the
        versions forwarders hold, is put right here, once, whichever worker comes first.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            new = await conn.fetchval(
                "INSERT INTO database_incarnations (service, incarnation) VALUES ($1, $2)"
                " ON CONFLICT DO NOTHING RETURNING true",
                self.service,
                self.incarnation,
            )
            if new and self._database_recoveries:
                log.warning("first worker on this run of the database (since %s): recovering", self.incarnation)
                for recovery in self._database_recoveries:
                    await recovery(conn)

    def _database_restarted(self, incarnation: str) -> None:
        # Our consumers' positions and what we published may be ahead of what it kept: the
        # worker's loop recovers (`adopt_database`) and reads again from the positions it holds
        # (services/runtime/positions.py), in place, keeping its partitions.
        self.incarnation = incarnation
        self.database_restarted.set()

    async def _on_broker_lost(self, check: LogCheck) -> None:
        for recovery in self._recoveries:
            await recovery(check)
        await advance_group_epoch(self.pool, group_id(self.settings, self.service), self.epoch)

    def _restart(self) -> None:
        # The group's offsets were committed against the lost log: only fresh consumers in a new
        # group are safe.
        request_restart("the broker lost our topics: starting again with fresh consumers in a new group")

    async def close(self) -> None:
        await self._broker.stop()
        await self._database.stop()
        await cancel_and_wait(self._http)
        await self.producer.stop()
        await self.pool.close()
        await self.health.stop()

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


def run_worker(settings: Settings, service: str, health_port: int, build: Callable[[WorkerResources], Worker]) -> None:
    """Run a worker until SIGTERM or SIGINT, then stop it gracefully."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        asyncio.run(_run(settings, service, health_port, build))
    else:
        uvloop.run(_run(settings, service, health_port, build))


async def _run(settings: Settings, service: str, health_port: int, build: Callable[[WorkerResources], Worker]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    resources = WorkerResources(settings, service, health_port)
    await resources.open()
    worker = build(resources)
    await resources.adopt_database()
    consumer = GroupConsumer(
        settings,
        resources.group_id,
        worker.lanes,
        session_timeout_seconds=settings.worker_session_timeout_seconds,
        heartbeat_interval_seconds=settings.worker_heartbeat_interval_seconds,
        group_instance_id=settings.worker_group_instance_id or None,
        fetch_max_wait_ms=worker.fetch_max_wait_ms,
        positions=ConsumerPositions(resources.pool, resources.incarnation),
    )
    resources.health.add_check("partitions", consumer.not_ready)
    consumer.start()
    timers = [loop.create_task(_every(timer, resources), name=timer.name) for timer in worker.timers]
    watching = loop.create_task(_until_failed(consumer), name="consumer-watch")
    stopping = loop.create_task(stop.wait(), name="stop-watch")
    database = loop.create_task(resources.database_restarted.wait(), name="database-watch")
    try:
        while True:
            await asyncio.wait({stopping, watching, database}, return_when=asyncio.FIRST_COMPLETED)
            if watching.done():
                watching.result()  # re-raises what stopped the consumer
            if stopping.done():
                break
            resources.database_restarted.clear()
            await _catch_up_with_database(resources, consumer)
            database = loop.create_task(resources.database_restarted.wait(), name="database-watch")
        log.info("stopping: finishing what is under way, committing it and leaving the group")
    finally:
        await cancel_and_wait(watching)
        await cancel_and_wait(stopping)
        await cancel_and_wait(database)
        for task in timers:
            await cancel_and_wait(task)
        await consumer.stop()
        await resources.close()
    log.info("stopped")


async def _catch_up_with_database(resources: WorkerResources, consumer: GroupConsumer) -> None:
    """A new run of the database: recover what depends on it, then read again from where it says we got."""
    try:
        await resources.adopt_database()
        await consumer.read_again_from_database(resources.incarnation)
    except Exception as exc:  # away again: tried again shortly (recoveries and re-reads are idempotent)
        if not is_transient(exc):
            raise
        log.warning("could not catch up with the database yet, trying again: %r", exc)
        asyncio.get_running_loop().call_later(1.0, resources.database_restarted.set)


async def _until_failed(consumer: GroupConsumer) -> None:
    raise RuntimeError("the consumer stopped") from await consumer.stopped()


async def _every(timer: Timer, resources: WorkerResources) -> None:
    while True:
        await asyncio.sleep(timer.every_seconds)
        if not resources.ready.is_set():
            continue
        try:
            await timer.work()
        except Exception as exc:  # a bug here must not stop the worker's consumers either
            if is_transient(exc):
                log.warning("%s failed, retrying on the next tick: %r", timer.name, exc)
            else:
                log.exception("%s failed", timer.name)
