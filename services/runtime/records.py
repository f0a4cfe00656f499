"""The record loop of a stream worker: parse, apply, dead-letter, acknowledge.

A record is acknowledged only after its handler returned, i.e. after the
database commit, so a crash means it is read again (every handler is
idempotent). A record that cannot be parsed or applied goes to the
dead-letter topic with the reason; a transient failure (database or broker
away) is retried, never skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import faust
from prometheus_client import Counter, Histogram
from pydantic import ValidationError

from schemas.errors import ErrorCode, Unappliable
from schemas.topics import Topic
from services.runtime.stream import TRANSIENT, WorkerResources
from services.runtime.tasks import cancel_and_wait

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
        # Re-raises what the applier failed with: its failure is the agent's, never a silent stop.
        await cancel_and_wait(applier)


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
