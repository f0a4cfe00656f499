"""Is the broker there, and does it still hold our topics? One watch per service.

Readiness must say "connected to the broker", and a broker can come back
without what it held: the embedded broker keeps topics in memory, and a
cluster can be rebuilt under a running system. Nothing in the Kafka protocol
says so outright: consumers find their position past the end and quietly
reset, commits fail with UnknownTopicOrPartition, and a worker's group
offsets point into a log that no longer exists. So each service looks for
itself, every half second:

- the broker answers a metadata request (else, once it has not answered within a second, unready);
- every topic of the registry exists (else it is created, when allowed);
- every topic has the id it had before (services/runtime/topic_ids.py): a topic
  made again has a new one, even when the same records were written to it again;
- now and then (`HAVIP_BROKER_LOG_CHECK_SECONDS`, and at the first look), no
  partition's end offset is below the highest one seen. Kafka never moves an end
  offset back (retention and compaction move the start), so a smaller one means
  the log was lost in place. Not every second: the embedded broker (Tansu 0.6)
  answers it by walking every batch the partition ever held, and five services
  asking every second made it the busiest process of a long-running stack
  (docs/benchmarks.md).

The ids and the highest offsets are kept in memory and in PostgreSQL
(`broker_topic_ids`, `broker_watermarks`), so a service that was down when it
happened notices too. On a loss the service is unready while its `on_lost`
recovery runs (each service knows what it must redo); then what it sees now
becomes what it compares with.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import Counter

from schemas.topics import ALL
from services.runtime.kafka import ensure_topics, new_admin, new_consumer, topic_name
from services.runtime.settings import Settings
from services.runtime.tasks import cancel_and_wait
from services.runtime.topic_ids import topic_ids
from services.runtime.transient import TRANSIENT

log = logging.getLogger(__name__)

LOSSES = Counter("havip_broker_log_losses_total", "Times the broker was found to have lost our topics", ["service"])

# A broker that has not answered a metadata request within `timeout_seconds` (1 s) is away:
# looked at every 0.5 s, a frozen or killed broker makes the service unready within 1.5 s.
_END_OFFSETS_TIMEOUT_SECONDS = 10.0
_DATABASE_TIMEOUT_SECONDS = 1.0

Marks = Mapping[TopicPartition, int]
TopicIds = Mapping[str, uuid.UUID]


@dataclass(frozen=True)
class LogCheck:
    """What one look found: topics that do not exist, and topics whose log was lost."""

    missing: frozenset[str]
    lost: frozenset[str]

    @property
    def healthy(self) -> bool:
        return not self.missing and not self.lost


def compare_logs(
    marks: Marks,
    ends: Marks | None,
    wanted: Iterable[str],
    present: Iterable[str],
    known_ids: TopicIds | None = None,
    ids: TopicIds | None = None,
) -> LogCheck:
    """Judge one look at the broker against what was seen before.

    A topic is lost when it had records and is gone, when its id is not the one
    it had (it was made again), or, when this look read end offsets, when any
    of its partitions ends below its mark (a partition that vanished ends at 0).
    """
    present_set = set(present)
    missing = frozenset(set(wanted) - present_set)
    lost = {tp.topic for tp, mark in marks.items() if mark > 0 and tp.topic not in present_set}
    if ends is not None:
        lost |= {tp.topic for tp, mark in marks.items() if mark > 0 and ends.get(tp, 0) < mark}
    if known_ids and ids:
        lost |= {topic for topic, topic_id in ids.items() if known_ids.get(topic, topic_id) != topic_id}
    return LogCheck(missing=missing, lost=frozenset(lost))


def raised_marks(marks: Marks, ends: Marks) -> dict[TopicPartition, int]:
    """The marks after a healthy look: never lower than before."""
    merged = dict(marks)
    for tp, end in ends.items():
        merged[tp] = max(end, merged.get(tp, 0))
    return merged


OnLost = Callable[[LogCheck], Awaitable[None]]


class BrokerWatch:
    def __init__(
        self,
        settings: Settings,
        service: str,
        pool: asyncpg.Pool | None,
        on_lost: OnLost | None = None,
        *,
        on_recovered: Callable[[], None] | None = None,
        every_seconds: float = 0.5,
        failures_allowed: int = 0,
        timeout_seconds: float = 1.0,
    ) -> None:
        self._settings = settings
        self._service = service
        self._pool = pool
        self._on_lost = on_lost
        self._on_recovered = on_recovered
        self._every = every_seconds
        self._allowed = failures_allowed
        self._timeout = timeout_seconds
        self._wanted = {topic_name(settings, topic) for topic in ALL}
        self._marks: dict[TopicPartition, int] = {}
        self._ids: dict[str, uuid.UUID] = {}
        self._saved_ids: dict[str, uuid.UUID] = {}
        self._marks_loaded = False
        self._offsets_every = settings.broker_log_check_seconds
        self._offsets_read_at: float | None = None
        self._failures = 0
        self._last_error = ""
        self._missing: frozenset[str] = frozenset()
        self._recovering: str | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._database_work: asyncio.Task[None] | None = None
        self.looks = 0  # completed looks, for tests that must wait for one

    # --- readiness --------------------------------------------------------------

    @property
    def problem(self) -> str | None:
        """A readiness check: None when the broker answers and holds our topics."""
        if self._recovering is not None:
            return self._recovering
        if self._failures > self._allowed:
            return f"broker unreachable: {self._last_error}"[:200]
        if self.looks == 0:
            return "not yet connected to the broker"
        if self._missing:
            return f"topics missing: {', '.join(sorted(self._missing))}"[:200]
        return None

    # --- lifecycle --------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch(), name="broker-watch")

    async def first_look(self) -> None:
        """Look once before starting, so readiness is decided from the start (a broker away: unready)."""
        with contextlib.suppress(Exception):  # the loop that follows counts and reports failures
            await self.look()

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        if self._database_work is not None:
            self._database_work.cancel()  # not waited for: on a hung database that could be forever
        await self._close_clients()

    async def _watch(self) -> None:
        while True:
            try:
                await self.look()
                self._failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # whatever the cause, the answer is "not reachable now"
                self._failures += 1
                self._last_error = repr(exc)
                if self._failures == self._allowed + 1:
                    log.warning("broker unreachable: %r", exc)
                await self._close_clients()  # a client that lost its broker is rebuilt, not trusted
            await asyncio.sleep(self._every)

    # --- one look ---------------------------------------------------------------

    async def look(self) -> LogCheck:
        """Look once, create missing topics, and recover from a lost log. Raises when the broker is away."""
        # Only the broker's answers are timed against "reachable": PostgreSQL (the marks and
        # ids kept there) is best effort below, so a frozen database never reads as a broker away.
        consumer, admin = await asyncio.wait_for(self._clients(), self._timeout)
        present, ids = await asyncio.wait_for(self._topics_and_ids(consumer), self._timeout)
        ends: dict[TopicPartition, int] | None = None
        if self._offsets_read_at is None or time.monotonic() - self._offsets_read_at >= self._offsets_every:
            # Slow on a long log of the embedded broker (docs/benchmarks.md): a timeout of its own.
            ends = await asyncio.wait_for(self._end_offsets(consumer, admin, present), _END_OFFSETS_TIMEOUT_SECONDS)
            self._offsets_read_at = time.monotonic()
        await self._in_database(self._load_marks)
        check = compare_logs(self._marks, ends, self._wanted, present, self._ids, ids)
        self.looks += 1
        self._missing = check.missing
        if check.missing and self._settings.create_topics:
            created = await ensure_topics(self._settings)
            if created:
                log.warning("created missing topics: %s", ", ".join(created))
        if check.lost:
            if ends is None:  # what the new logs hold now: the marks start again from there
                ends = await self._end_offsets(consumer, admin, present)
            await self._recover(check, ends, ids)
        else:
            self._ids.update(ids)
            await self._in_database(self._save_ids)
            if ends is not None:
                self._marks = raised_marks(self._marks, ends)
                marks = ends
                await self._in_database(lambda: self._save_marks(marks))
        return check

    async def _in_database(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Keeping marks and ids in PostgreSQL, without ever holding up a look at the broker.

        One piece at a time, in the background, waited for up to a second and never cancelled
        (cancelling a query on a hung server waits for the server). While one has not ended,
        what a later look offers is dropped: the next look offers newer, and the marks and ids
        in memory guard this process meanwhile.
        """
        if self._pool is None or (self._database_work is not None and not self._database_work.done()):
            return
        self._database_work = asyncio.get_running_loop().create_task(work(), name="broker-watch-database")
        await asyncio.wait({self._database_work}, timeout=_DATABASE_TIMEOUT_SECONDS)

    async def _topics_and_ids(self, consumer: AIOKafkaConsumer) -> tuple[set[str], dict[str, uuid.UUID]]:
        present = set(await consumer.topics()) & self._wanted
        return present, dict(await topic_ids(consumer._client, present))

    async def _recover(self, check: LogCheck, ends: Marks, ids: TopicIds) -> None:
        LOSSES.labels(self._service).inc()
        self._recovering = f"the broker lost topics {', '.join(sorted(check.lost))}; recovering"
        log.warning("%s (end offsets now %s)", self._recovering, _describe(ends, check.lost))
        try:
            if self._on_lost is not None:
                await self._on_lost(check)
            # The new log starts the marks again; written over, not raised.
            self._marks = {tp: mark for tp, mark in self._marks.items() if tp.topic not in check.lost}
            self._marks.update(ends)
            await self._save_marks(ends, replace=True)
            self._ids.update(ids)
            await self._save_ids()
        except BaseException:
            self._recovering = None  # looked at again next time: the marks still say it was lost
            raise
        log.info("recovered from the lost topics %s", ", ".join(sorted(check.lost)))
        if self._on_recovered is not None:
            self._on_recovered()  # e.g. a restart, which keeps the service unready until it is back
        else:
            self._recovering = None

    async def _clients(self) -> tuple[AIOKafkaConsumer, AIOKafkaAdminClient]:
        if self._consumer is None or self._admin is None:
            # Never subscribes, so it never joins a group; the admin client only describes.
            timeout_ms = int(self._timeout * 1000)
            consumer = new_consumer(self._settings, None, request_timeout_ms=timeout_ms)
            admin = new_admin(self._settings, request_timeout_ms=timeout_ms)
            try:
                await consumer.start()
                await admin.start()
            except BaseException:
                await _quietly(consumer.stop())
                await _quietly(admin.close())
                raise
            self._consumer, self._admin = consumer, admin
        return self._consumer, self._admin

    async def _close_clients(self) -> None:
        if self._consumer is not None:
            await _quietly(self._consumer.stop())
        if self._admin is not None:
            await _quietly(self._admin.close())
        self._consumer = self._admin = None

    async def _end_offsets(
        self, consumer: AIOKafkaConsumer, admin: AIOKafkaAdminClient, topics: set[str]
    ) -> dict[TopicPartition, int]:
        if not topics:
            return {}
        # Only topics listed as present: the embedded broker creates a topic it is asked to describe.
        described = await admin.describe_topics(sorted(topics))
        partitions = [
            TopicPartition(entry["topic"], p["partition"])
            for entry in described
            if entry["error_code"] == 0
            for p in entry["partitions"]
        ]
        return dict(await consumer.end_offsets(partitions)) if partitions else {}

    async def _load_marks(self) -> None:
        if self._marks_loaded or self._pool is None:
            return
        try:
            rows = await self._pool.fetch(
                "SELECT topic, partition, end_offset FROM broker_watermarks WHERE service = $1",
                self._service,
                timeout=_DATABASE_TIMEOUT_SECONDS,
            )
        except (*TRANSIENT, asyncpg.PostgresError) as exc:
            log.debug("broker watermarks not loaded yet: %r", exc)  # the marks in memory guard meanwhile
            return
        stored = {
            TopicPartition(r["topic"], r["partition"]): r["end_offset"] for r in rows if r["topic"] in self._wanted
        }
        try:
            id_rows = await self._pool.fetch(
                "SELECT topic, topic_id FROM broker_topic_ids WHERE service = $1",
                self._service,
                timeout=_DATABASE_TIMEOUT_SECONDS,
            )
        except (*TRANSIENT, asyncpg.PostgresError) as exc:
            log.debug("broker topic ids not loaded yet: %r", exc)
            return
        self._marks = raised_marks(stored, self._marks)
        # What this process saw itself is newer than what an earlier one stored.
        self._saved_ids = {r["topic"]: r["topic_id"] for r in id_rows if r["topic"] in self._wanted}
        self._ids = {**self._saved_ids, **self._ids}
        self._marks_loaded = True

    async def _save_ids(self) -> None:
        """Best effort, and only what changed: the ids in memory guard this process meanwhile."""
        changed = {topic: topic_id for topic, topic_id in self._ids.items() if self._saved_ids.get(topic) != topic_id}
        if self._pool is None or not changed:
            return
        try:
            await self._pool.executemany(
                "INSERT INTO broker_topic_ids (service, topic, topic_id) VALUES ($1, $2, $3)"
                " ON CONFLICT (service, topic) DO UPDATE SET topic_id = excluded.topic_id, seen_at = now()",
                [(self._service, topic, topic_id) for topic, topic_id in changed.items()],
                timeout=_DATABASE_TIMEOUT_SECONDS,
            )
        except (*TRANSIENT, asyncpg.PostgresError) as exc:
            log.debug("broker topic ids not saved: %r", exc)
            return
        self._saved_ids.update(changed)

    async def _save_marks(self, ends: Marks, *, replace: bool = False) -> None:
        """Best effort: the marks in memory still guard this process while PostgreSQL is away."""
        if self._pool is None or not ends:
            return
        keep = "excluded.end_offset" if replace else "greatest(broker_watermarks.end_offset, excluded.end_offset)"
        try:
            await self._pool.executemany(
                "INSERT INTO broker_watermarks (service, topic, partition, end_offset) VALUES ($1, $2, $3, $4)"
                f" ON CONFLICT (service, topic, partition) DO UPDATE SET end_offset = {keep}, seen_at = now()",
                [(self._service, tp.topic, tp.partition, end) for tp, end in ends.items()],
                timeout=_DATABASE_TIMEOUT_SECONDS,
            )
        except (*TRANSIENT, asyncpg.PostgresError) as exc:
            log.debug("broker watermarks not saved: %r", exc)


async def group_epoch(pool: asyncpg.Pool, group_id: str) -> int:
    """Which generation of a stream worker group to join (see consumer_group_epochs)."""
    return int(await pool.fetchval("SELECT epoch FROM consumer_group_epochs WHERE group_id = $1", group_id) or 0)


async def advance_group_epoch(pool: asyncpg.Pool, group_id: str, seen: int) -> None:
    """Move the group on from the generation `seen`: workers that noticed the same loss move it once."""
    await pool.execute(
        "INSERT INTO consumer_group_epochs (group_id, epoch) VALUES ($1, $2 + 1)"
        " ON CONFLICT (group_id) DO UPDATE SET epoch = $2 + 1 WHERE consumer_group_epochs.epoch = $2",
        group_id,
        seen,
    )


def _describe(ends: Marks, topics: frozenset[str]) -> dict[str, int]:
    return {f"{tp.topic}[{tp.partition}]": end for tp, end in sorted(ends.items()) if tp.topic in topics}


async def _quietly(closing: Awaitable[object]) -> None:
    with contextlib.suppress(Exception):
        await closing
