"""One way to consume a topic: parse or dead-letter, dispatch by message type, apply; drivers commit.

Every consumer of ours hands what it read to a `Kernel`; only how records arrive differs (a
driver: `services/runtime/group.py` for a consumer group, the forwarder's assigned partitions
in `services/forwarder/follower.py`). For each batch the kernel:

- parses every record with its topic's model; one that does not parse is dead-lettered;
- dispatches by message type through the service's `Registry` (cosmicpython's message bus): a
  type registered with `on_batch` gets each run of consecutive messages of that type at once,
  in arrival order; any other type one message at a time;
- dead-letters a message its handler refuses (`Unappliable`), or fails on with a bug, so the
  rest of the partition still applies;
- raises `TransientFailure` when the database or the broker is away (services/runtime/transient.py):
  the driver rewinds to the start of the batch and reads it again later. Nothing is skipped, and
  since every handler is idempotent, what was applied before the failure is applied again harmlessly.

Drivers commit a batch's offsets only after `apply` returned, i.e. after the database commit.
"""

from __future__ import annotations

import logging
import time
import typing
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Histogram
from pydantic import ValidationError

from schemas.errors import ErrorCode, Unappliable
from schemas.topics import Topic
from services.runtime.deadletters import DeadLetters
from services.runtime.transient import is_transient

log = logging.getLogger(__name__)

RECORDS = Counter("havip_stream_records_total", "Records handled", ["service", "topic", "outcome"])
BATCH_SECONDS = Histogram(
    "havip_stream_batch_seconds",
    "Time to apply one run of records of one message type",
    ["service", "topic"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
)
BATCH_RECORDS = Histogram(
    "havip_stream_batch_records",
    "Records in one applied run",
    ["service", "topic"],
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500),
)

# A redelivered batch (after a transient failure) must not dead-letter the same record twice.
_REMEMBERED_DEAD_LETTERS = 10_000


@dataclass(frozen=True, slots=True)
class Delivery:
    """One record as a driver hands it over."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class TransientFailure(Exception):
    """The batch could not be applied now (the database or broker is away): read it again later."""


Handler = Callable[[Any], Awaitable[None]]
# Applies a run of messages in order; returns those that can never count, as (index, refusal).
BatchHandler = Callable[[Sequence[Any]], Awaitable[Sequence[tuple[int, Unappliable]]]]
# A check of a parsed message against its record (e.g. its key); the reason it is malformed, or None.
RecordCheck = Callable[[Delivery, Any], str | None]


@dataclass(frozen=True)
class _Route:
    handler: Handler | BatchHandler
    batched: bool


class Registry:
    """What one service does with each topic it reads and each message type on them."""

    def __init__(self) -> None:
        self._topics: dict[str, tuple[Topic, RecordCheck | None]] = {}
        self._routes: dict[type, _Route] = {}

    def read(self, name: str, topic: Topic, check: RecordCheck | None = None) -> None:
        """Read `topic` (its full name, prefix included); `check` may refuse a record that parsed."""
        self._topics[name] = (topic, check)

    def on(self, message_type: Any, handler: Handler) -> None:
        """One message at a time. `message_type` may be a union: every member gets `handler`."""
        for member in _members(message_type):
            self._routes[member] = _Route(handler, batched=False)

    def on_batch(self, message_type: Any, handler: BatchHandler) -> None:
        """Each run of consecutive messages of this type (or union) at once, in arrival order."""
        for member in _members(message_type):
            self._routes[member] = _Route(handler, batched=True)

    @property
    def topics(self) -> list[str]:
        return list(self._topics)

    def topic(self, name: str) -> tuple[Topic, RecordCheck | None]:
        return self._topics[name]

    def topic_name(self, name: str) -> str:
        """The registry's name of the topic read as `name` (no prefix); `name` itself for what is not a topic."""
        found = self._topics.get(name)
        return found[0].name if found is not None else name

    def route(self, message: Any) -> _Route | None:
        return self._routes.get(type(message))


def _members(message_type: Any) -> tuple[type, ...]:
    if typing.get_origin(message_type) is typing.Annotated:
        message_type = typing.get_args(message_type)[0]
    members = typing.get_args(message_type)
    return tuple(members) if members else (message_type,)


class Kernel:
    """Applies batches of records for one service (see the module's docstring)."""

    def __init__(self, service: str, registry: Registry, dead_letters: Callable[[], DeadLetters]) -> None:
        self.service = service
        self._registry = registry
        # A callable: workers open their producer (and so their dead letters) after building the kernel.
        self._dead_letters = dead_letters
        self._dead_lettered: OrderedDict[tuple[str, int, int], None] = OrderedDict()

    async def apply(self, deliveries: Sequence[Delivery]) -> None:
        """Apply records in order; raises TransientFailure when the batch must be read again."""
        parsed: list[tuple[Delivery, Any]] = []
        for delivery in deliveries:
            message = await self._parse(delivery)
            if message is not None:
                parsed.append((delivery, message))
        start = 0
        while start < len(parsed):
            route = self._registry.route(parsed[start][1])
            if route is None:
                delivery, message = parsed[start]
                await self.dead_letter(
                    delivery, ErrorCode.APPLY_FAILED, f"{self.service} has no handler for {type(message).__name__}"
                )
                start += 1
                continue
            end = start + 1
            if route.batched:
                while end < len(parsed) and self._registry.route(parsed[end][1]) is route:
                    end += 1
            await self._apply_run(route, parsed[start:end])
            start = end

    async def _parse(self, delivery: Delivery) -> Any | None:
        topic, check = self._registry.topic(delivery.topic)
        try:
            message = topic.parse(delivery.value or b"")
        except ValidationError as exc:
            await self.dead_letter(delivery, ErrorCode.MALFORMED_MESSAGE, _validation_reason(exc))
            return None
        problem = check(delivery, message) if check is not None else None
        if problem is not None:
            await self.dead_letter(delivery, ErrorCode.MALFORMED_MESSAGE, problem)
            return None
        return message

    def _label(self, delivery: Delivery) -> str:
        """The topic's name without the deployment's prefix, as metrics name it."""
        return self._registry.topic_name(delivery.topic)

    async def _apply_run(self, route: _Route, run: Sequence[tuple[Delivery, Any]]) -> None:
        topic = self._label(run[0][0])
        started = time.perf_counter()
        if not route.batched:
            delivery, message = run[0]
            await self._apply_one(typing.cast(Handler, route.handler), delivery, message)
            return
        handler = typing.cast(BatchHandler, route.handler)
        try:
            refusals = await handler([message for _, message in run])
        except Exception as exc:
            if is_transient(exc):
                raise TransientFailure(repr(exc)) from exc
            # A bug: find the record behind it, so the others still apply.
            log.exception("a run of %d failed; applying its records one at a time", len(run))
            for delivery, message in run:
                await self._apply_one(_one_of(handler), delivery, message)
            return
        BATCH_SECONDS.labels(self.service, topic).observe(time.perf_counter() - started)
        BATCH_RECORDS.labels(self.service, topic).observe(len(run))
        refused = dict(refusals)
        for index, (delivery, _) in enumerate(run):
            if index in refused:
                await self.dead_letter(delivery, refused[index].code, refused[index].message)
            else:
                RECORDS.labels(self.service, topic, "applied").inc()

    async def _apply_one(self, handler: Handler, delivery: Delivery, message: Any) -> None:
        try:
            await handler(message)
        except Unappliable as exc:
            await self.dead_letter(delivery, exc.code, exc.message)
            return
        except Exception as exc:
            if is_transient(exc):
                raise TransientFailure(repr(exc)) from exc
            # A bug must not stop the partition; the record is kept where an operator can see it.
            log.exception(
                "handler failed topic=%s partition=%s offset=%s", delivery.topic, delivery.partition, delivery.offset
            )
            await self.dead_letter(delivery, ErrorCode.APPLY_FAILED, f"{type(exc).__name__}: {exc}")
            return
        RECORDS.labels(self.service, self._label(delivery), "applied").inc()

    async def dead_letter(self, delivery: Delivery, code: str, reason: str) -> None:
        """Keep a record that cannot count on `havip.dead-letters`, once, with the reason.

        A delivery with no place in a log (offset -1: a lease renewal, which never is on
        Kafka) cannot be read twice, so it is never looked up among those already kept.
        """
        position = (delivery.topic, delivery.partition, delivery.offset)
        if delivery.offset >= 0 and position in self._dead_lettered:
            return
        try:
            await self._dead_letters().send(
                source_topic=delivery.topic,
                partition=delivery.partition,
                offset=delivery.offset,
                key=delivery.key,
                value=delivery.value,
                code=code,
                reason=reason,
            )
        except Exception as exc:
            if is_transient(exc):
                raise TransientFailure(repr(exc)) from exc
            raise
        if delivery.offset >= 0:
            self._dead_lettered[position] = None
        if len(self._dead_lettered) > _REMEMBERED_DEAD_LETTERS:
            self._dead_lettered.popitem(last=False)
        RECORDS.labels(self.service, self._label(delivery), "dead-lettered").inc()


def _one_of(handler: BatchHandler) -> Handler:
    async def alone(message: Any) -> None:
        for _, refusal in await handler([message]):
            raise refusal

    return alone


def _validation_reason(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {err['msg']}" for err in exc.errors()[:10])
