"""The observer's reports on their way to `vrrp.events`: in order, and never lost to a broker outage.

A claim seen while the broker is away must still reach the mapping service once it is back
(its lapse or resignation even more so): reports wait here, in the order they were seen, and
are sent again until the broker takes them. Sending one twice is harmless (the second is a
replay: stale by its sequence number).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from prometheus_client import Counter

from schemas import topics
from schemas.messages import VrrpReported
from services.runtime.transient import BROKER_UNAVAILABLE

log = logging.getLogger(__name__)

PUBLISHED = Counter("havip_observe_reports_total", "Observed state changes published to vrrp.events", ["state"])
SEND_FAILURES = Counter("havip_observe_send_failures_total", "Sends to the broker that failed, by what", ["what"])

# How long to wait before trying the broker again.
RETRY_SECONDS = 0.5


class Sender(Protocol):
    """What the outbox needs of a producer (aiokafka's AIOKafkaProducer is one)."""

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> asyncio.Future[Any]: ...


class ReportOutbox:
    def __init__(self, producer: Sender, topic: str, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._producer = producer
        self._topic = topic
        self._sleep = sleep
        self._queue: asyncio.Queue[VrrpReported] = asyncio.Queue()

    def put(self, report: VrrpReported) -> None:
        self._queue.put_nowait(report)

    def waiting(self) -> int:
        return self._queue.qsize()

    async def run(self) -> None:
        pending: list[VrrpReported] = []
        while True:
            if not pending:
                pending.append(await self._queue.get())
            while not self._queue.empty():
                pending.append(self._queue.get_nowait())
            try:
                # Sent together, acknowledged together: one HAVIP's reports stay in order in its partition.
                sent = [
                    await self._producer.send(self._topic, key=r.havip_id.encode(), value=topics.encode(r))
                    for r in pending
                ]
                await asyncio.gather(*sent)
            except BROKER_UNAVAILABLE as exc:
                SEND_FAILURES.labels("reports").inc()
                log.warning("the broker did not take %d observed reports (%r); trying again", len(pending), exc)
                await self._sleep(RETRY_SECONDS)
                continue
            for report in pending:
                PUBLISHED.labels(report.state.value).inc()
            pending = []
