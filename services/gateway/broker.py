"""The gateway's link to the broker: bounded publishes, and an honest "unreachable".

A request must never hang on a broker that is away: every publish has a
deadline. After a failure the link is marked down, and requests that would
publish answer 503 with Retry-After at once, before recording anything,
until a probe (or a publish by the outbox relay) finds the broker again.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaProducer

from schemas.errors import ErrorCode, HaVipError
from services.runtime.transient import BROKER_UNAVAILABLE

log = logging.getLogger(__name__)


class BrokerLink:
    def __init__(self, producer: AIOKafkaProducer, *, publish_timeout: float, retry_after: float = 2.0) -> None:
        self._producer = producer
        self._timeout = publish_timeout
        self.retry_after = retry_after
        self._down_since: float | None = None

    @property
    def reachable(self) -> bool:
        return self._down_since is None

    def require_reachable(self) -> None:
        if self._down_since is not None:
            raise HaVipError(
                ErrorCode.SERVICE_UNAVAILABLE, "the message broker is unreachable; retry", retry_after=self.retry_after
            )

    async def publish(self, topic: str, key: bytes, value: bytes) -> None:
        """Publish within the deadline; raises one of BROKER_UNAVAILABLE (and marks the link down) when it could not."""
        try:
            await asyncio.wait_for(self._producer.send_and_wait(topic, key=key, value=value), self._timeout)
        except BROKER_UNAVAILABLE:
            self._mark_down()
            raise
        self._mark_up()

    async def probe(self) -> bool:
        """Ask the broker for metadata; True (and the link up) when it answers."""
        try:
            answered = await asyncio.wait_for(self._producer.client.force_metadata_update(), self._timeout)
        except BROKER_UNAVAILABLE:
            answered = False
        if answered:
            self._mark_up()
        return bool(answered)

    def _mark_down(self) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning("broker unreachable: answering 503 until it is back")

    def _mark_up(self) -> None:
        if self._down_since is not None:
            log.info("broker reachable again after %.1f s", time.monotonic() - self._down_since)
            self._down_since = None
