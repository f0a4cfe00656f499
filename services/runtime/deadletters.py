"""Dead letters: what a consumer could not parse or apply, kept with the reason."""

from __future__ import annotations

import base64
import logging

from aiokafka import AIOKafkaProducer
from prometheus_client import Counter

from schemas import topics
from schemas.messages import DeadLettered
from services.runtime.kafka import topic_name
from services.runtime.settings import Settings

log = logging.getLogger(__name__)

DEAD_LETTERS = Counter("havip_dead_letters_total", "Records sent to havip.dead-letters", ["consumer", "code"])


class DeadLetters:
    def __init__(self, producer: AIOKafkaProducer, settings: Settings, consumer: str) -> None:
        self._producer = producer
        self._topic = topic_name(settings, topics.DEAD_LETTERS)
        self._consumer = consumer

    async def send(
        self,
        *,
        source_topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        code: str,
        reason: str,
    ) -> None:
        raw = value or b""
        try:
            text: str | None = raw.decode()
        except UnicodeDecodeError:
            text = None
        letter = DeadLettered(
            source_topic=source_topic,
            partition=partition,
            offset=offset,
            consumer=self._consumer,
            code=code,
            reason=reason[:4000],
            original_key_b64=base64.b64encode(key).decode() if key is not None else None,
            original_value_b64=base64.b64encode(raw).decode(),
            original_value_text=text,
        )
        await self._producer.send_and_wait(self._topic, key=key, value=topics.encode(letter))
        DEAD_LETTERS.labels(self._consumer, code).inc()
        log.warning(
            "dead-lettered topic=%s partition=%s offset=%s code=%s reason=%s",
            source_topic,
            partition,
            offset,
            code,
            reason[:300],
        )
