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
from collections.abc import Collection

from aiokafka import AIOKafkaProducer

from schemas.errors import ErrorCode, HaVipError
from services.runtime.topic_ids import topic_ids
from services.runtime.transient import BROKER_UNAVAILABLE

log = logging.getLogger(__name__)


class BrokerLink:
    def __init__(
        self,
        producer: AIOKafkaProducer,
        *,
        publish_timeout: float,
        retry_after: float = 2.0,
        topics: Collection[str] = (),
    ) -> None:
        self._producer = producer
        self._topics = list(topics)
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
        """Ask the broker for metadata; True (and the link up) when it answers and holds `topics`.

        A broker that came back empty takes a produce to a topic it does not hold yet, with the
        producer's metadata from before, and that partition then refuses every produce for good
        (Tansu 0.6: its end offset kept, fetches answering nothing, produces UnknownError, even
        after the topic is made). So the link comes up only once every topic we write exists
        again, asked without creating any, and the producer's metadata is refreshed first.
        """
        try:
            held = await asyncio.wait_for(topic_ids(self._producer.client, self._topics), self._timeout)
            answered = len(held) == len(self._topics) and await asyncio.wait_for(
                self._producer.client.force_metadata_update(), self._timeout
            )
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
