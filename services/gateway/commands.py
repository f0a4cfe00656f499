"""Submitting a tenant's command: record the operation, then publish it.

The operation row comes first so a 202 never names an operation that does
not exist; the command's id is the operation's id, so every result on
`havip.command-results` finds its row. A reused Idempotency-Key answers
with the operation it first created, and never publishes twice.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from schemas import topics
from schemas.errors import ErrorCode, HaVipError
from schemas.messages import AttachHaVip, CreateHaVip, DetachHaVip
from services.gateway import operations
from services.gateway.operations import Operation
from services.runtime.kafka import topic_name
from services.runtime.settings import Settings

log = logging.getLogger(__name__)

HaVipCommand = CreateHaVip | AttachHaVip | DetachHaVip


def new_operation_id() -> str:
    return f"op-{uuid.uuid4().hex}"


@dataclass(frozen=True)
class Idempotency:
    key: str | None
    request_hash: str


@dataclass(frozen=True)
class Submitted:
    operation: Operation
    replayed: bool


class CommandSubmitter:
    def __init__(self, pool: asyncpg.Pool, producer: AIOKafkaProducer, settings: Settings) -> None:
        self._pool = pool
        self._producer = producer
        self._topic = topic_name(settings, topics.COMMANDS)

    async def submit(self, command: HaVipCommand, request: dict[str, Any], idempotency: Idempotency) -> Submitted:
        recorded = await self._record(command, request, idempotency)
        if recorded.replayed:
            return recorded
        try:
            await self._producer.send_and_wait(self._topic, key=command.havip_id.encode(), value=topics.encode(command))
        except (TimeoutError, KafkaError, OSError) as exc:
            log.warning("command not published operation=%s error=%r", command.command_id, exc)
            await operations.fail_unpublished(self._pool, command.command_id, "the command could not be queued")
            raise HaVipError(ErrorCode.SERVICE_UNAVAILABLE, "the command could not be queued; retry later") from exc
        return recorded

    async def _record(self, command: HaVipCommand, request: dict[str, Any], idempotency: Idempotency) -> Submitted:
        tenant_id = command.tenant_id
        # Two attempts: a concurrent request holding the key may free it
        # (its publish failed) between our insert and our read.
        for _ in range(2):
            if idempotency.key is not None:
                earlier = await operations.find_by_idempotency_key(self._pool, tenant_id, idempotency.key)
                if earlier is not None:
                    return _replay(earlier, idempotency)
            try:
                created = await operations.insert_operation(
                    self._pool,
                    operation_id=command.command_id,
                    tenant_id=tenant_id,
                    kind=command.type,
                    havip_id=command.havip_id,
                    request=request,
                    idempotency_key=idempotency.key,
                    request_hash=idempotency.request_hash,
                )
                return Submitted(created, replayed=False)
            except asyncpg.UniqueViolationError:
                # Another request with the same key won the insert; answer as it did.
                continue
        raise HaVipError(ErrorCode.SERVICE_UNAVAILABLE, "a request with this Idempotency-Key is in flight; retry")


def _replay(earlier: Operation, idempotency: Idempotency) -> Submitted:
    if earlier.request_hash != idempotency.request_hash:
        raise HaVipError(ErrorCode.IDEMPOTENT_MISMATCH, "this Idempotency-Key was used with a different request")
    return Submitted(earlier, replayed=True)
