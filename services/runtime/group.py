"""A consumer group member that hands what it reads to kernels in batches, lane by lane.

The consume kernel (services/runtime/consume.py) decides what a record does; this driver only
moves records: one aiokafka consumer fetches every topic of the service, and each *lane* (a
set of topics that must be applied in the order they were read, e.g. the mapping worker's
commands and VRRP reports) applies whatever arrived while it applied the last batch, so a lone
record waits for nothing and a busy lane amortises its statements over many records. Lanes
run side by side: a quota command waiting for the inventory to catch up does not stop the
inventory lane that will let it.

- **Commit after the database.** A lane marks a batch's offsets applied only after the kernel
  returned (its database transaction committed); they are committed a moment later, when the
  partitions are revoked, and when the worker stops. A crash means records are read again.
  Workers also keep the offsets in PostgreSQL, written just before each commit
  (services/runtime/positions.py), and start a partition from the lower of the two: a
  database that lost commits has the records behind them read again.
- **Rewind on a failed batch.** A transient failure (database or broker away) seeks every
  partition of the batch back to its first record and drops what was queued after it; the
  lane waits (0.1 s doubling to 5 s) and the records are fetched again.
- **Rebalances.** When partitions are revoked the driver waits for the batches being applied,
  commits them, and forgets what was queued for those partitions: their next owner reads them.
- **Backpressure.** A lane with more than a few batches queued pauses its partitions' fetching.
- **Readiness** (`not_ready`): not before the first assignment, nor while the group rebalances,
  nor, for workers, until it has applied what its partitions held when they were assigned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from services.runtime.consume import Delivery, Kernel, TransientFailure
from services.runtime.kafka import new_consumer
from services.runtime.positions import ConsumerPositions, start_from
from services.runtime.settings import Settings
from services.runtime.tasks import cancel_and_wait

log = logging.getLogger(__name__)

COMMIT_EVERY_SECONDS = 0.2
REVOKE_WAIT_SECONDS = 1.0
RETRY_FIRST_SECONDS = 0.1
RETRY_MAX_SECONDS = 5.0


@dataclass
class Lane:
    """Topics applied together, in the order they were read, by one kernel."""

    name: str
    topics: Sequence[str]
    kernel: Kernel
    max_records: int = 500
    _pending: deque[tuple[TopicPartition, list[ConsumerRecord[bytes, bytes]]]] = field(
        default_factory=deque, init=False, repr=False
    )
    _queued: int = field(default=0, init=False, repr=False)
    _wake: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)
    # Held while a batch is applied: who must know it ended (a revocation, a stop) waits for it.
    _busy: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)

    def push(self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        self._pending.append((tp, records))
        self._queued += len(records)
        self._wake.set()

    def take(self) -> list[tuple[TopicPartition, list[ConsumerRecord[bytes, bytes]]]]:
        """What is queued, up to about `max_records` (whole fetches, in arrival order)."""
        taken: list[tuple[TopicPartition, list[ConsumerRecord[bytes, bytes]]]] = []
        count = 0
        while self._pending and (not taken or count + len(self._pending[0][1]) <= self.max_records):
            tp, records = self._pending.popleft()
            taken.append((tp, records))
            count += len(records)
        self._queued -= count
        if not self._pending:
            self._wake.clear()
        return taken

    def drop(self, partitions: set[TopicPartition]) -> None:
        kept = [(tp, records) for tp, records in self._pending if tp not in partitions]
        self._pending = deque(kept)
        self._queued = sum(len(records) for _, records in kept)
        if not self._pending:
            self._wake.clear()

    @property
    def queued(self) -> int:
        return self._queued


class _Listener(ConsumerRebalanceListener):
    def __init__(self, group: GroupConsumer) -> None:
        self._group = group

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._group.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self._group.on_assigned(set(assigned))
        await self._group.rewind_to_saved(set(assigned))
        self._group.take_stock(set(assigned))


class GroupConsumer:
    def __init__(
        self,
        settings: Settings,
        group_id: str,
        lanes: Sequence[Lane],
        *,
        wait_caught_up: bool = True,
        session_timeout_seconds: float | None = None,
        heartbeat_interval_seconds: float | None = None,
        rebalance_timeout_seconds: float | None = None,
        group_instance_id: str | None = None,
        fetch_max_wait_ms: int | None = None,
        positions: ConsumerPositions | None = None,
    ) -> None:
        self._settings = settings
        self._positions = positions
        self.group_id = group_id
        self._lanes = list(lanes)
        self._lane_of = {topic: lane for lane in self._lanes for topic in lane.topics}
        self._wait_caught_up = wait_caught_up
        session = session_timeout_seconds or settings.session_timeout_seconds
        options: dict[str, object] = {
            "session_timeout_ms": int(session * 1000),
            "rebalance_timeout_ms": int((rebalance_timeout_seconds or session) * 1000),
            # Commands and reports for one HAVIP share its key, hence its partition number on every
            # topic: the range assignor gives the same numbers of each topic to the same worker.
            "partition_assignment_strategy": (RangePartitionAssignor,),
            "max_partition_fetch_bytes": 1 << 20,
        }
        if heartbeat_interval_seconds is not None:
            options["heartbeat_interval_ms"] = int(heartbeat_interval_seconds * 1000)
        if group_instance_id:
            options["group_instance_id"] = group_instance_id
        if fetch_max_wait_ms is not None:
            options["fetch_max_wait_ms"] = fetch_max_wait_ms
        self._options = options
        self._consumer: AIOKafkaConsumer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._fetching: asyncio.Task[None] | None = None
        self._applied: dict[TopicPartition, int] = {}  # next offset, applied but maybe not committed
        self._committed: dict[TopicPartition, int] = {}
        self._assignment: set[TopicPartition] = set()
        self._paused: set[TopicPartition] = set()
        self._rebalancing = False
        self._joined = False
        self._behind: dict[TopicPartition, int] = {}
        self._catch_up: asyncio.Task[None] | None = None

    # --- lifecycle --------------------------------------------------------------

    def start(self) -> None:
        """Join the group in the background: a restarted member's join waits out its old session."""
        self._consumer = new_consumer(self._settings, self.group_id, **self._options)
        self._consumer.subscribe(list(self._lane_of), listener=_Listener(self))
        loop = asyncio.get_running_loop()
        self._fetching = loop.create_task(self._fetch(), name=f"{self.group_id}-fetch")
        self._tasks = [loop.create_task(self._apply(lane), name=f"{self.group_id}-{lane.name}") for lane in self._lanes]
        self._tasks.append(loop.create_task(self._commit_periodically(), name=f"{self.group_id}-commit"))

    async def stop(self) -> None:
        """Stop fetching, let the batches being applied finish, commit them, and leave the group."""
        await cancel_and_wait(self._fetching)
        for lane in self._lanes:
            async with lane._busy:  # the batch under way ends; the next one never starts
                lane.drop(set(self._assignment))
        for task in self._tasks:
            await cancel_and_wait(task)
        await cancel_and_wait(self._catch_up)
        if self._consumer is not None:
            with contextlib.suppress(Exception):  # whoever reads them next applies them again
                await self._commit()
            await self._consumer.stop()

    async def read_again_from_database(self, incarnation: str) -> None:
        """Read every assigned partition again from where the database says the group got.

        For a database that came back as a new run of its server: it may have lost commits it
        had acknowledged, and the positions it holds are those of the moment it went back to.
        Fetching pauses, the batches under way end, what was queued is dropped, and each
        partition starts again from the lower of that position and what this worker applied.
        """
        consumer = self._consumer
        if self._positions is None:
            return
        if consumer is None or not self._assignment:
            self._positions.incarnation = incarnation  # nothing to read again; what comes is read from there
            return
        assigned = set(self._assignment)
        async with self._not_fetching(consumer, assigned), contextlib.AsyncExitStack() as held:
            for lane in self._lanes:
                await held.enter_async_context(lane._busy)
            for lane in self._lanes:
                lane.drop(assigned)
            saved = await self._positions.load(self.group_id)
            here: dict[TopicPartition, int | None] = {}
            for tp in sorted(assigned):
                applied = self._applied.pop(tp, None)
                self._committed.pop(tp, None)
                here[tp] = applied if applied is not None else await consumer.committed(tp)
            rewinds = start_from(here, saved)
            for tp, offset in here.items():  # what was queued is gone: fetch it again
                if tp in rewinds:
                    continue
                if offset is None:
                    await consumer.seek_to_beginning(tp)
                else:
                    consumer.seek(tp, offset)
            self._rewind_to(consumer, rewinds, here)
            # Positions are written again, to the run they were read from.
            self._positions.incarnation = incarnation

    @contextlib.asynccontextmanager
    async def _not_fetching(self, consumer: AIOKafkaConsumer, partitions: set[TopicPartition]) -> AsyncIterator[None]:
        """Nothing is fetched for `partitions` meanwhile: a record handed over while their start
        is decided would be applied before the ones read again."""
        consumer.pause(*partitions)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):  # revoked meanwhile: its next owner starts from the commits
                consumer.resume(*(partitions & self._assignment) - self._paused)

    def _rewind_to(
        self,
        consumer: AIOKafkaConsumer,
        rewinds: dict[TopicPartition, int],
        here: Mapping[TopicPartition, int | None],
    ) -> None:
        for tp, offset in sorted(rewinds.items()):
            log.warning(
                "%s[%d]: the database holds position %d, the group got to %s: reading from %d again",
                tp.topic,
                tp.partition,
                offset,
                here[tp],
                offset,
            )
            consumer.seek(tp, offset)

    async def stopped(self) -> BaseException | None:
        """Wait until a task that must run for as long as the consumer does ends (a bug); what ended it."""
        await asyncio.wait([t for t in [self._fetching, *self._tasks] if t], return_when=asyncio.FIRST_COMPLETED)
        return self.failed

    @property
    def failed(self) -> BaseException | None:
        """What stopped a task of this consumer that must never stop (a bug), if one did."""
        for task in [self._fetching, *self._tasks]:
            if task is not None and task.done() and not task.cancelled() and task.exception() is not None:
                return task.exception()
        return None

    def not_ready(self) -> str | None:
        """A readiness check: None once it holds its partitions and has caught up with them."""
        if self.failed is not None:
            return f"the consumer stopped: {self.failed!r}"[:200]
        if not self._joined:
            return "waiting for partition assignment"
        if self._rebalancing:
            return "rebalancing"
        if self._wait_caught_up and self._behind:
            return f"catching up: {len(self._behind)} partitions behind where their logs ended when assigned"
        return None

    # --- fetching -----------------------------------------------------------------

    async def _fetch(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        delay = RETRY_FIRST_SECONDS
        while True:
            try:
                await consumer.start()
                break
            except KafkaError as exc:  # the broker is not there yet: keep trying, unready meanwhile
                log.warning("cannot reach the broker group=%s error=%r", self.group_id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
        while True:
            try:
                batch = await consumer.getmany(timeout_ms=500, max_records=2000)
            except KafkaError as exc:
                # A broker outage is waited out here, not by restarting the worker.
                log.warning("fetch failed group=%s error=%r", self.group_id, exc)
                await asyncio.sleep(1.0)
                continue
            for tp, records in batch.items():
                if tp in self._assignment:
                    self._lane_of[tp.topic].push(tp, records)
            self._pace(consumer)

    def _pace(self, consumer: AIOKafkaConsumer) -> None:
        # A lane far behind stops its partitions' fetching rather than queueing without bound.
        for lane in self._lanes:
            partitions = {tp for tp in self._assignment if tp.topic in lane.topics}
            if lane.queued > 4 * lane.max_records:
                stop = partitions - self._paused
                if stop:
                    consumer.pause(*stop)
                    self._paused |= stop
            elif lane.queued <= lane.max_records:
                go = partitions & self._paused
                if go:
                    consumer.resume(*go)
                    self._paused -= go

    # --- applying -------------------------------------------------------------------

    async def _apply(self, lane: Lane) -> None:
        delay = RETRY_FIRST_SECONDS
        while True:
            await lane._wake.wait()
            async with lane._busy:
                taken = lane.take()
                if not taken:
                    continue
                deliveries = [
                    Delivery(r.topic, r.partition, r.offset, r.key, r.value) for _, records in taken for r in records
                ]
                try:
                    await lane.kernel.apply(deliveries)
                except TransientFailure as exc:
                    log.warning(
                        "lane %s: %d records not applied, reading them again: %s", lane.name, len(deliveries), exc
                    )
                    self._rewind(lane, taken)
                    failed = True
                else:
                    failed = False
                    for tp, records in taken:
                        if tp in self._assignment:
                            self._applied[tp] = records[-1].offset + 1
                            self._note_progress(tp)
            if failed:
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
            else:
                delay = RETRY_FIRST_SECONDS

    def _rewind(self, lane: Lane, taken: Sequence[tuple[TopicPartition, list[ConsumerRecord[bytes, bytes]]]]) -> None:
        assert self._consumer is not None
        first: dict[TopicPartition, int] = {}
        for tp, records in taken:
            first.setdefault(tp, records[0].offset)
        lane.drop(set(first))
        for tp, offset in first.items():
            if tp in self._assignment:
                try:
                    self._consumer.seek(tp, offset)
                except Exception as exc:  # revoked meanwhile: its next owner starts from the commit
                    log.warning("could not rewind partition=%s error=%r", tp, exc)

    # --- committing -------------------------------------------------------------------

    async def _commit_periodically(self) -> None:
        while True:
            await asyncio.sleep(COMMIT_EVERY_SECONDS)
            try:
                await self._commit()
            except Exception as exc:  # a rebalance under way, or the broker away: the next tick tries again
                log.debug("commit failed group=%s error=%r", self.group_id, exc)

    async def _commit(self, partitions: set[TopicPartition] | None = None) -> None:
        assert self._consumer is not None
        offsets = {
            tp: offset
            for tp, offset in self._applied.items()
            if tp in self._assignment and (partitions is None or tp in partitions) and self._committed.get(tp) != offset
        }
        if not offsets:
            return
        if self._positions is not None:
            # Before Kafka's: if the database is away, Kafka's commit must not get ahead of it.
            await self._positions.save(self.group_id, offsets)
        await self._consumer.commit(offsets)
        self._committed.update(offsets)

    # --- rebalances ---------------------------------------------------------------------

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        self._rebalancing = True
        for lane in self._lanes:
            lane.drop(revoked)
        # A batch under way is committed below if it ends soon; a long one (quota waiting for the
        # inventory) must not hold up the group's rebalance: its next owner applies it again.
        for lane in self._lanes:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lane._busy.acquire(), REVOKE_WAIT_SECONDS)
                lane._busy.release()
        try:
            await self._commit(revoked)
        except Exception as exc:  # whoever reads them next applies them again; replays change nothing
            log.warning("commit on revocation failed group=%s error=%r", self.group_id, exc)
        for tp in revoked:
            # An offset kept from an earlier ownership could move a later commit backwards.
            self._applied.pop(tp, None)
            self._committed.pop(tp, None)
            self._behind.pop(tp, None)
        self._assignment -= revoked
        self._paused -= revoked

    async def rewind_to_saved(self, assigned: set[TopicPartition]) -> None:
        """Start each partition from the position PostgreSQL holds when it is below Kafka's."""
        consumer = self._consumer
        if self._positions is None or consumer is None or not assigned:
            return
        async with self._not_fetching(consumer, assigned):
            try:
                saved = await self._positions.load(self.group_id)
                committed = {tp: await consumer.committed(tp) for tp in assigned}
                # A partition the database has no position for yet (a new group, or the first start
                # with this table) gets one now, where the group stands: a copy of the database
                # taken from here on knows how far the group had got.
                unknown = {tp: committed[tp] or 0 for tp in assigned if tp not in saved}
                if unknown:
                    await self._positions.save_first(self.group_id, unknown)
            except Exception as exc:  # the database is away: nothing can be applied until it is back
                log.warning("cannot read the positions kept in the database, starting from Kafka's: %r", exc)
                return
            self._rewind_to(consumer, start_from(committed, saved), committed)

    def on_assigned(self, assigned: set[TopicPartition]) -> None:
        self._assignment = set(assigned)
        self._paused &= self._assignment
        self._joined = True
        self._rebalancing = True  # until `take_stock` has looked where the partitions end
        log.info(
            "group %s assigned %s",
            self.group_id,
            ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(assigned)) or "no partitions",
        )
        if self._catch_up is not None:
            self._catch_up.cancel()
        self._behind = {}

    def take_stock(self, assigned: set[TopicPartition]) -> None:
        """Once each partition's start is decided (and its position kept in PostgreSQL): ready when caught up."""
        self._catch_up = asyncio.get_running_loop().create_task(self._take_stock(assigned), name="take-stock")

    async def _take_stock(self, assigned: set[TopicPartition]) -> None:
        """Note where each assigned partition ends now; the worker is caught up once it applied that far."""
        assert self._consumer is not None
        partitions = sorted(assigned)
        while True:
            try:
                ends = await self._consumer.end_offsets(partitions) if partitions else {}
                committed = {tp: await self._consumer.committed(tp) or 0 for tp in partitions}
                break
            except Exception as exc:  # broker away: readiness must not stop following
                log.warning("cannot read where our partitions end, retrying: %r", exc)
                await asyncio.sleep(1.0)
        self._behind = {tp: end for tp, end in ends.items() if end > max(committed[tp], self._applied.get(tp, 0))}
        self._rebalancing = False

    def _note_progress(self, tp: TopicPartition) -> None:
        end = self._behind.get(tp)
        if end is not None and self._applied.get(tp, 0) >= end:
            del self._behind[tp]
